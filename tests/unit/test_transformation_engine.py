"""The library part of the transformation engine: mapping, conversion, rules (seed section 5)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.transformation_engine import (
    DataConverter,
    SchemaMapper,
    TransformationEngine,
    TransformationError,
    TransformationRule,
)


def seed_engine() -> TransformationEngine:
    transformer = TransformationEngine()
    transformer.schema_mapper.add_mapping(
        source_schema="v1",
        target_schema="v2",
        field_mappings={"agent_id": "id", "agent_name": "name", "agent_status": "status"},
    )
    rule = TransformationRule(
        name="uppercase_status",
        source_field="status",
        target_field="status",
        transformer=lambda x: x.upper(),
    )
    transformer.add_transformation(rule)
    return transformer


def test_seed_example_verbatim() -> None:
    from app.transformation_engine import TransformationEngine, TransformationRule  # noqa: F401 (the seed's imports)

    transformer = seed_engine()
    request_data = {"agent_id": "123", "agent_name": "GPT", "agent_status": "active"}
    transformed = transformer.transform_request(request_data, "v1", "v2")
    assert transformed == {"id": "123", "name": "GPT", "status": "ACTIVE"}
    assert request_data == {"agent_id": "123", "agent_name": "GPT", "agent_status": "active"}


def test_backend_v2_answer_comes_back_in_v1_names() -> None:
    transformer = seed_engine()
    answer = {"id": "123", "name": "GPT", "status": "ACTIVE", "created": 1}
    assert transformer.transform_response(answer, "v2", "v1") == {
        "agent_id": "123",
        "agent_name": "GPT",
        "agent_status": "ACTIVE",
        "created": 1,
    }


def test_rule_directions() -> None:
    engine = TransformationEngine()
    engine.add_transformation(TransformationRule("req", "a", "a", lambda v: v + 1))
    engine.add_transformation(TransformationRule("resp", "a", "a", lambda v: v * 10, direction="response"))
    engine.add_transformation(TransformationRule("both", "a", "a", lambda v: -v, direction="both"))
    assert engine.transform_request({"a": 1}, "x", "y") == {"a": -2}
    assert engine.transform_response({"a": 1}, "y", "x") == {"a": -10}
    with pytest.raises(ValueError):
        TransformationRule("bad", "a", "a", direction="sideways")  # type: ignore[arg-type]


def test_response_rules_see_backend_names_before_mapping_back() -> None:
    engine = seed_engine()
    engine.add_transformation(TransformationRule("lower", "status", "status", str.lower, direction="response"))
    assert engine.transform_response({"status": "ACTIVE"}, "v2", "v1") == {"agent_status": "active"}


def test_unknown_schemas_are_identity_plus_rules() -> None:
    engine = seed_engine()
    data = {"agent_id": "1", "status": "x"}
    # The seed's orchestrator calls transform_request(data, "v1", "internal").
    assert engine.transform_request(data, "v1", "internal") == {"agent_id": "1", "status": "X"}
    assert engine.transform_response({"id": "1"}, "internal", "v1") == {"id": "1"}


def test_add_transformation_replaces_same_name_and_remove() -> None:
    engine = TransformationEngine()
    engine.add_transformation(TransformationRule("r", "a", "a", lambda v: 1))
    engine.add_transformation(TransformationRule("r", "a", "a", lambda v: 2))
    assert len(engine.rules) == 1
    assert engine.transform_request({"a": 0}, "v1", "v1") == {"a": 2}
    assert engine.remove_transformation("r") and not engine.remove_transformation("r")


def test_rule_to_another_field_keeps_or_moves_source() -> None:
    engine = TransformationEngine()
    engine.add_transformation(TransformationRule("copy", "first", "nick", str.title))
    engine.add_transformation(TransformationRule("move", "n", "meta.count", int, keep_source=False))
    assert engine.transform_request({"first": "ada", "n": "3"}, "a", "a") == {
        "first": "ada",
        "nick": "Ada",
        "meta": {"count": 3},
    }


def test_rule_on_absent_field_does_nothing() -> None:
    engine = seed_engine()
    assert engine.transform_request({"agent_id": "1"}, "v1", "v2") == {"id": "1"}


# -- mapping ---------------------------------------------------------------------------------


def test_nested_paths_both_ways() -> None:
    mapper = SchemaMapper()
    mapper.add_mapping("v1", "v2", {"agent.id": "agent_id", "agent.profile.name": "name", "flat": "meta.flat"})
    v1 = {"agent": {"id": 7, "profile": {"name": "n"}, "other": True}, "flat": 1}
    v2 = mapper.map(v1, "v1", "v2")
    assert v2 == {"agent": {"other": True}, "agent_id": 7, "name": "n", "meta": {"flat": 1}}
    assert mapper.map(v2, "v2", "v1") == v1


def test_moving_the_last_field_out_drops_the_emptied_object() -> None:
    mapper = SchemaMapper()
    mapper.add_mapping("v1", "v2", {"agent.id": "id"})
    assert mapper.map({"agent": {"id": 1}}, "v1", "v2") == {"id": 1}
    # An object that was empty before is not ours to drop.
    assert mapper.map({"agent": {}}, "v1", "v2") == {"agent": {}}


def test_list_paths_apply_to_each_element() -> None:
    mapper = SchemaMapper()
    mapper.add_mapping(
        "v1",
        "v2",
        {"items[].agent_id": "items[].id", "orders[].lines[].sku": "orders[].lines[].code"},
    )
    v1 = {
        "items": [{"agent_id": 1, "x": 1}, {"x": 2}, "not-an-object"],
        "orders": [{"lines": [{"sku": "a"}, {"sku": "b", "qty": 2}]}, {"lines": []}],
    }
    v2 = mapper.map(v1, "v1", "v2")
    assert v2 == {
        "items": [{"x": 1, "id": 1}, {"x": 2}, "not-an-object"],
        "orders": [{"lines": [{"code": "a"}, {"qty": 2, "code": "b"}]}, {"lines": []}],
    }
    assert mapper.map(v2, "v2", "v1") == v1


def test_list_path_into_a_new_list() -> None:
    mapper = SchemaMapper()
    mapper.add_mapping("v1", "v2", {"items[].agent_id": "agents[].id"}, keep_unmapped=False)
    assert mapper.map({"items": [{"agent_id": 1, "x": 0}, {"agent_id": 2}], "y": 1}, "v1", "v2") == {
        "agents": [{"id": 1}, {"id": 2}]
    }


def test_top_level_array_maps_each_object() -> None:
    mapper = SchemaMapper()
    mapper.add_mapping("v1", "v2", {"agent_id": "id"})
    assert mapper.map([{"agent_id": 1}, {"agent_id": 2}, 3], "v1", "v2") == [{"id": 1}, {"id": 2}, 3]
    assert mapper.map("scalar", "v1", "v2") == "scalar"


def test_keep_unmapped_false_drops_other_fields_both_ways() -> None:
    mapper = SchemaMapper()
    mapper.add_mapping("v1", "v2", {"a": "b"}, keep_unmapped=False)
    assert mapper.map({"a": 1, "z": 2}, "v1", "v2") == {"b": 1}
    assert mapper.map({"b": 1, "z": 2}, "v2", "v1") == {"a": 1}


def test_swapped_fields_dont_overwrite_each_other() -> None:
    mapper = SchemaMapper()
    mapper.add_mapping("v1", "v2", {"a": "b", "b": "a"})
    assert mapper.map({"a": 1, "b": 2}, "v1", "v2") == {"a": 2, "b": 1}


def test_explicit_reverse_mapping_wins_and_versions_chain() -> None:
    mapper = SchemaMapper()
    mapper.add_mapping("v1", "v2", {"a": "b"})
    mapper.add_mapping("v2", "v3", {"b": "c"})
    assert mapper.map({"a": 1}, "v1", "v3") == {"c": 1}
    assert mapper.map({"c": 1}, "v3", "v1") == {"a": 1}
    mapper.add_mapping("v2", "v1", {"b": "legacy"})
    assert mapper.map({"b": 1}, "v2", "v1") == {"legacy": 1}
    assert mapper.chain("v1", "nowhere") is None and mapper.chain("v1", "v1") == ()


def test_input_is_not_modified() -> None:
    mapper = SchemaMapper()
    mapper.add_mapping("v1", "v2", {"agent.id": "id"})
    data = {"agent": {"id": 1}}
    mapper.map(data, "v1", "v2")
    assert data == {"agent": {"id": 1}}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"a": "b", "a.x": "c"}, "overlap"),
        ({"a": "x", "b": "x"}, "overlap"),
        ({"items[].a": "a"}, r"same number of \[\]"),
        ({"tags[]": "labels[]"}, r"trailing \[\]"),
        ({"a..b": "c"}, "bad field path"),
        ({"": "c"}, "empty"),
    ],
)
def test_bad_mappings_are_refused(fields: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        SchemaMapper().add_mapping("v1", "v2", fields)


def test_value_in_the_way_of_a_target_is_an_error() -> None:
    mapper = SchemaMapper()
    mapper.add_mapping("v1", "v2", {"id": "agent.id"})
    with pytest.raises(TransformationError) as info:
        mapper.map({"id": 1, "agent": "a string"}, "v1", "v2")
    assert info.value.field == "agent.id" and info.value.rule == "mapping v1->v2"


# The hypothesis property: v1 -> v2 -> v1 is the identity for any object of mapped fields.

ROUND_TRIP_FIELDS = {
    "agent_id": "id",
    "agent.name": "name",
    "agent.meta.tags": "tags",
    "flat": "nested.deep.flat",
    "items[].agent_id": "items[].id",
    "orders[].lines[].sku": "orders[].lines[].code",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(None), strategy.map(lambda v: (v,)))


def _objects(min_size: int = 0, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects holding any subset (of at least ``min_size``) of ``fields``."""
    return (
        st.fixed_dictionaries({k: _maybe(v) for k, v in fields.items()})
        .map(lambda d: {k: v[0] for k, v in d.items() if v is not None})
        .filter(lambda d: len(d) >= min_size)
    )


def v1_objects(nested_min: int) -> st.SearchStrategy[dict[str, Any]]:
    return _objects(
        agent_id=json_values,
        flat=json_values,
        agent=_objects(nested_min, name=json_values, meta=_objects(nested_min, tags=json_values)),
        items=st.lists(_objects(agent_id=json_values), max_size=3),
        orders=st.lists(_objects(lines=st.lists(_objects(sku=json_values), max_size=3)), max_size=3),
    )


@settings(max_examples=300)
@given(v1_objects(nested_min=0))
def test_property_v1_v2_v1_round_trip(v1: dict[str, Any]) -> None:
    mapper = SchemaMapper()
    mapper.add_mapping("v1", "v2", ROUND_TRIP_FIELDS)
    assert mapper.map(mapper.map(v1, "v1", "v2"), "v2", "v1") == v1


@settings(max_examples=200)
@given(v1_objects(nested_min=1))
def test_property_round_trip_dropping_unmapped(v1: dict[str, Any]) -> None:
    # Without keep_unmapped an object that holds no mapped field ({"agent": {}}) is not data of
    # the mapping and is dropped, so nested objects here hold at least one field; lists keep
    # their length either way.
    mapper = SchemaMapper()
    mapper.add_mapping("v1", "v2", ROUND_TRIP_FIELDS, keep_unmapped=False)
    assert mapper.map(mapper.map(v1, "v1", "v2"), "v2", "v1") == v1


# -- conversion ------------------------------------------------------------------------------

conv = DataConverter()


@pytest.mark.parametrize(
    ("value", "to_type", "expected"),
    [
        (12, "str", "12"),
        (1.5, str, "1.5"),
        (True, "str", "true"),
        ("x", "str", "x"),
        ("42", "int", 42),
        (" -7 ", int, -7),
        ("3.0", "int", 3),
        (4.0, "int", 4),
        ("1e3", "int", 1000),
        ("2.5", "float", 2.5),
        (3, float, 3.0),
        ("true", "bool", True),
        ("OFF", bool, False),
        (1, "bool", True),
        ("yes", "bool", True),
        ("2024-05-01T12:00:00Z", "datetime", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        ("2024-05-01T14:00:00+02:00", datetime, datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        (0, "datetime", datetime(1970, 1, 1, tzinfo=timezone.utc)),
        ("2024-05-01T00:00:00Z", "epoch", 1714521600),
        ("2024-05-01T00:00:00", "epoch", 1714521600),  # naive is UTC
        (datetime(2024, 5, 1, tzinfo=timezone(timedelta(hours=1))), "epoch", 1714518000),
        ("1714521600.5", "epoch", 1714521600.5),
        (1714521600, "epoch", 1714521600),
    ],
)
def test_converter_converts(value: Any, to_type: Any, expected: Any) -> None:
    result = conv.convert(value, to_type, field="f")
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "to_type", "type_name"),
    [
        ("abc", "int", "str"),
        ("1.5", "int", "str"),
        (1.5, "int", "float"),
        (True, "int", "bool"),
        (None, "int", "null"),
        ("1_000", "int", "str"),
        (str(2**70), "int", "str"),
        ("nan", "float", "str"),
        ("inf", "float", "str"),
        ([1], "float", "array"),
        ("maybe", "bool", "str"),
        (2, "bool", "int"),
        ({"a": 1}, "str", "object"),
        (None, "str", "null"),
        ("yesterday", "datetime", "str"),
        (1e300, "datetime", "float"),
        ("soon", "epoch", "str"),
        (False, "epoch", "bool"),
    ],
)
def test_converter_failure_names_field_and_type(value: Any, to_type: str, type_name: str) -> None:
    with pytest.raises(TransformationError) as info:
        conv.convert(value, to_type, field="order.total")
    assert info.value.field == "order.total"
    assert f"cannot convert {type_name} to {to_type}" in info.value.message
    assert "order.total" in info.value.message


def test_converter_unknown_type_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown type"):
        conv.convert(1, "decimal")


# -- errors from rules -----------------------------------------------------------------------


def test_rule_that_raises_names_field_and_rule() -> None:
    engine = seed_engine()
    with pytest.raises(TransformationError) as info:
        engine.transform_request({"agent_status": 5}, "v1", "v2")
    err = info.value
    assert (err.field, err.rule) == ("status", "uppercase_status")
    assert "AttributeError" in err.message
    assert err.to_dict() == {"error": err.message, "field": "status", "rule": "uppercase_status"}


def test_converter_error_inside_a_rule_gets_the_rule_name() -> None:
    engine = TransformationEngine()
    engine.add_transformation(
        TransformationRule("price", "items[].price", "items[].price", lambda v: conv.convert(v, "float", field="items[].price"))
    )
    assert engine.transform_request({"items": [{"price": "1.5"}]}, "a", "a") == {"items": [{"price": 1.5}]}
    with pytest.raises(TransformationError) as info:
        engine.transform_request({"items": [{"price": "cheap"}]}, "a", "a")
    assert (info.value.field, info.value.rule) == ("items[].price", "price")


def test_in_place_rule_on_each_list_element() -> None:
    engine = TransformationEngine()
    engine.add_transformation(TransformationRule("tags", "tags[]", "tags[]", str.upper))
    assert engine.transform_request({"tags": ["a", "b"]}, "a", "a") == {"tags": ["A", "B"]}
