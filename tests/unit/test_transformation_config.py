"""Declared rules (RuleSpec), per-route config (RouteTransform) and its compiled form."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.transformation_engine import (
    CompiledTransform,
    RouteTransform,
    RuleSpec,
    TransformationError,
    rule_from_spec,
)


def apply(spec: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    rule_from_spec(spec).apply(data)
    return data


def error_locs(exc: ValidationError) -> list[tuple[Any, ...]]:
    return [e["loc"] for e in exc.errors()]


# -- each op ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "before", "after"),
    [
        ({"op": "rename", "field": "agent_id", "to": "id"}, {"agent_id": 1, "x": 2}, {"id": 1, "x": 2}),
        ({"op": "rename", "field": "a.b", "to": "c.d"}, {"a": {"b": 1}}, {"c": {"d": 1}}),
        ({"op": "rename", "field": "items[].a", "to": "items[].b"}, {"items": [{"a": 1}, {}]}, {"items": [{"b": 1}, {}]}),
        ({"op": "rename", "field": "missing", "to": "x"}, {"y": 1}, {"y": 1}),
        ({"op": "rename", "field": "items[].a", "to": "items[].b"}, {"items": [{}]}, {"items": [{}]}),
        ({"op": "rename", "field": "items[].a", "to": "items[].b"}, {"items": []}, {"items": []}),
        ({"op": "set", "field": "meta.source", "value": "gw"}, {}, {"meta": {"source": "gw"}}),
        ({"op": "set", "field": "a", "value": {"k": [1]}}, {"a": 0}, {"a": {"k": [1]}}),
        ({"op": "set", "field": "items[].seen", "value": True}, {"items": [{}, {"seen": False}]}, {"items": [{"seen": True}, {"seen": True}]}),
        ({"op": "default", "field": "lang", "value": "en"}, {}, {"lang": "en"}),
        ({"op": "default", "field": "lang", "value": "en"}, {"lang": "fr"}, {"lang": "fr"}),
        ({"op": "default", "field": "lang", "value": "en"}, {"lang": None}, {"lang": None}),
        ({"op": "remove", "field": "secret"}, {"secret": 1, "a": 2}, {"a": 2}),
        ({"op": "remove", "field": "items[].secret"}, {"items": [{"secret": 1}, {}]}, {"items": [{}, {}]}),
        ({"op": "uppercase", "field": "status"}, {"status": "active"}, {"status": "ACTIVE"}),
        ({"op": "lowercase", "field": "tags[]"}, {"tags": ["A", "B"]}, {"tags": ["a", "b"]}),
        ({"op": "convert", "field": "n", "type": "int"}, {"n": "42"}, {"n": 42}),
        ({"op": "convert", "field": "flag", "type": "bool"}, {"flag": "yes"}, {"flag": True}),
        ({"op": "convert", "field": "ids[]", "type": "str"}, {"ids": [1, 2]}, {"ids": ["1", "2"]}),
        ({"op": "template", "field": "full", "template": "{first} {last}"}, {"first": "Ada", "last": "L"}, {"first": "Ada", "last": "L", "full": "Ada L"}),
        ({"op": "template", "field": "user.full", "template": "{name.first}!"}, {"user": {"name": {"first": "A"}}}, {"user": {"name": {"first": "A"}, "full": "A!"}}),
        ({"op": "template", "field": "label", "template": "{n:03d}/{ok}"}, {"n": 7, "ok": True}, {"n": 7, "ok": True, "label": "007/true"}),
        ({"op": "template", "field": "full", "template": "{first} {last}"}, {"first": "Ada"}, {"first": "Ada"}),
    ],
)
def test_each_op(spec: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> None:
    assert apply(spec, before) == after


def test_rule_name_and_direction() -> None:
    rule = rule_from_spec(RuleSpec(op="uppercase", field="s"), direction="response")
    assert (rule.name, rule.direction) == ("uppercase:s", "response")
    assert rule_from_spec({"op": "remove", "field": "s", "name": "strip"}).name == "strip"


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({"op": "explode", "field": "a"}, ("op",)),
        ({"op": "rename", "field": "a"}, ("to",)),
        ({"op": "set", "field": "a"}, ("value",)),
        ({"op": "default", "field": "a"}, ("value",)),
        ({"op": "convert", "field": "a"}, ("type",)),
        ({"op": "convert", "field": "a", "type": "decimal"}, ("type",)),
        ({"op": "template", "field": "a"}, ("template",)),
        ({"op": "template", "field": "a", "template": "{}"}, ("template",)),
        ({"op": "template", "field": "a", "template": "{a!r}"}, ("template",)),
        ({"op": "template", "field": "a", "template": "{unclosed"}, ("template",)),
        ({"op": "template", "field": "a", "template": "{items[].x}"}, ("template",)),
        ({"op": "uppercase", "field": "a", "value": 1}, ("value",)),
        ({"op": "remove", "field": "a", "to": "b"}, ("to",)),
        ({"op": "rename", "field": "items[].a", "to": "b"}, ("to",)),
        ({"op": "rename", "field": "a", "to": "b[]"}, ("to",)),
        ({"op": "remove", "field": "tags[]"}, ("field",)),
        ({"op": "set", "field": "a..b", "value": 1}, ("field",)),
        ({"op": "set", "field": "a", "value": object()}, ("value",)),
        ({"op": "set", "field": "a", "value": 1, "colour": "red"}, ("colour",)),
        ({"field": "a"}, ("op",)),
    ],
)
def test_bad_spec_names_the_field(spec: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        RuleSpec.model_validate(spec)
    assert loc in error_locs(info.value)
    with pytest.raises(ValidationError):
        rule_from_spec(spec)


@pytest.mark.parametrize(
    ("spec", "data", "field"),
    [
        ({"op": "convert", "field": "n", "type": "int"}, {"n": "many"}, "n"),
        ({"op": "convert", "field": "items[].n", "type": "float"}, {"items": [{"n": []}]}, "items[].n"),
        ({"op": "uppercase", "field": "s"}, {"s": 1}, "s"),
        ({"op": "template", "field": "t", "template": "{n:.2f}"}, {"n": "x"}, "n"),
        ({"op": "set", "field": "a.b", "value": 1}, {"a": "not an object"}, "a.b"),
    ],
)
def test_bad_value_names_field_and_rule(spec: dict[str, Any], data: dict[str, Any], field: str) -> None:
    rule = rule_from_spec(spec)
    with pytest.raises(TransformationError) as info:
        rule.apply(data)
    assert (info.value.field, info.value.rule) == (field, rule.name)


# -- route config ----------------------------------------------------------------------------

ROUTE_YAML = """
client_version_header: X-API-Version
default_client_version: v1
backend_version: v2
mappings:
  - source: v1
    target: v2
    fields: {agent_id: id, agent_name: name, agent_status: status, "items[].agent_id": "items[].id"}
request_rules:
  - {op: uppercase, field: status}
  - {op: convert, field: priority, type: int}
  - {op: set, field: meta.via, value: gateway}
response_rules:
  - {op: remove, field: internal}
  - {op: template, field: label, template: "{name} ({status})"}
request_headers:
  add: {X-Gateway: apigw}
  remove: [Cookie]
  rename: {X-Old: X-New}
response_headers:
  add: {X-Served-By: apigw}
  remove: [Server]
  rename: {X-Backend-Id: X-Upstream-Id}
query:
  add: {source: gateway}
  remove: [debug]
  rename: {q: search}
"""


def compiled() -> CompiledTransform:
    return CompiledTransform.from_config(yaml.safe_load(ROUTE_YAML))


def test_yaml_route_transforms_request_and_response() -> None:
    t = compiled()
    assert t.has_body_rules and t.has_request_body_rules and t.has_response_body_rules
    version = t.client_version({"x-api-version": "v1"})
    body = orjson.dumps({"agent_id": "123", "agent_status": "active", "priority": "2", "items": [{"agent_id": 9}]})
    assert orjson.loads(t.request_body(body, version)) == {
        "id": "123",
        "status": "ACTIVE",
        "priority": 2,
        "items": [{"id": 9}],
        "meta": {"via": "gateway"},
    }
    answer = orjson.dumps({"id": "123", "name": "GPT", "status": "ACTIVE", "internal": 1})
    assert orjson.loads(t.response_body(answer, version)) == {
        "agent_id": "123",
        "agent_name": "GPT",
        "agent_status": "ACTIVE",
        "label": "GPT (ACTIVE)",
    }


def test_client_at_backend_version_gets_rules_only() -> None:
    t = compiled()
    out = t.request_body(b'{"id": "1", "status": "x"}', "v2")
    assert orjson.loads(out) == {"id": "1", "status": "X", "meta": {"via": "gateway"}}


def test_top_level_array_answer_maps_each_object() -> None:
    t = compiled()
    answer = orjson.dumps([{"id": 1, "name": "a", "status": "s"}, {"id": 2}])
    assert orjson.loads(t.response_body(answer, "v1")) == [
        {"agent_id": 1, "agent_name": "a", "agent_status": "s", "label": "a (s)"},
        {"agent_id": 2},
    ]


def test_client_version_sources() -> None:
    t = CompiledTransform.from_config(
        {
            "backend_version": "v2",
            "client_version_path_segment": 0,
            "mappings": [{"source": "v1", "target": "v2", "fields": {"a": "b"}}],
        }
    )
    assert t.client_version({}) == "v2"  # default_client_version defaults to the backend's
    assert t.client_version({"X-API-Version": " v1 "}) == "v1"
    assert t.client_version([(b"X-Api-Version", b"v1")]) == "v1"
    assert t.client_version({}, path="/v1/agents") == "v1"
    assert t.client_version({"x-api-version": "v1"}, path="/agents/v2") == "v1"  # not a version segment
    assert t.known_versions == {"v1", "v2"}


def test_request_headers() -> None:
    t = compiled()
    headers = [
        (b"Host", b"gw"),
        (b"cookie", b"a=1"),
        (b"X-Old", b"o"),
        (b"x-gateway", b"spoofed"),
        (b"content-length", b"12"),
        (b"accept-encoding", b"gzip"),
    ]
    assert t.request_headers(headers) == [
        (b"host", b"gw"),
        (b"x-new", b"o"),
        # the route rewrites answers, so it asks for one that isn't compressed
        (b"accept-encoding", b"identity"),
        (b"x-gateway", b"apigw"),
    ]


def test_response_headers() -> None:
    t = compiled()
    headers = [(b"Server", b"nginx"), (b"X-Backend-Id", b"b1"), (b"Content-Length", b"99"), (b"content-type", b"application/json")]
    assert sorted(t.response_headers(headers)) == sorted(
        [(b"x-upstream-id", b"b1"), (b"content-type", b"application/json"), (b"x-served-by", b"apigw")]
    )


def test_routes_without_rules_pass_everything_through_untouched() -> None:
    t = CompiledTransform.from_config({})
    assert not t.has_body_rules
    headers = [(b"Content-Length", b"3")]
    body = b"not json"
    assert t.request_headers(headers) is headers and t.response_headers(headers) is headers
    assert t.request_body(body, "") is body and t.response_body(body, "") is body
    assert t.query(b"a=1&a=2") == b"a=1&a=2"


def test_header_rules_alone_keep_bodies_and_lengths() -> None:
    t = CompiledTransform.from_config({"request_headers": {"add": {"X-A": "1"}}})
    assert not t.has_body_rules
    assert t.request_headers([(b"content-length", b"3")]) == [(b"content-length", b"3"), (b"x-a", b"1")]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"q=cats&debug=1&page=2", b"search=cats&page=2&source=gateway"),
        (b"", b"source=gateway"),
        (b"source=evil&source=x&a=%2F%20", b"a=%2F%20&source=gateway"),
        (b"%71=encoded+name&debug", b"search=encoded+name&source=gateway"),
        (b"a=1&&b=2", b"a=1&b=2&source=gateway"),
    ],
)
def test_query(query: bytes, expected: bytes) -> None:
    assert compiled().query(query) == expected


def test_query_values_are_encoded() -> None:
    t = CompiledTransform.from_config({"query": {"add": {"tag name": "a&b=c/é"}, "rename": {"x": "y z"}}})
    assert t.query(b"x=1") == b"y+z=1&tag+name=a%26b%3Dc%2F%C3%A9"


# -- bad input: 400 naming the field and the rule ---------------------------------------------


def assert_400(exc: TransformationError, field: str, rule: str) -> None:
    body = exc.to_dict()
    assert (body["field"], body["rule"]) == (field, rule)
    assert body["error"]


def test_non_json_request_body() -> None:
    with pytest.raises(TransformationError) as info:
        compiled().request_body(b"agent_id=1", "v1")
    assert_400(info.value, "body", "json")


def test_field_that_does_not_convert() -> None:
    with pytest.raises(TransformationError) as info:
        compiled().request_body(b'{"priority": "high"}', "v1")
    assert_400(info.value, "priority", "convert:priority")
    assert "str" in info.value.message


def test_rule_that_raises() -> None:
    with pytest.raises(TransformationError) as info:
        compiled().request_body(b'{"agent_status": 3}', "v1")
    assert_400(info.value, "status", "uppercase:status")


def test_unknown_client_version_even_without_body() -> None:
    with pytest.raises(TransformationError) as info:
        compiled().request_body(b"", "v9")
    assert_400(info.value, "X-API-Version", "version")
    assert "v1, v2" in info.value.message


def test_mapping_conflict_in_the_body() -> None:
    t = CompiledTransform.from_config(
        {"backend_version": "v2", "mappings": [{"source": "v1", "target": "v2", "fields": {"id": "agent.id"}}]}
    )
    with pytest.raises(TransformationError) as info:
        t.request_body(b'{"id": 1, "agent": 5}', "v1")
    assert_400(info.value, "agent.id", "mapping v1->v2")


def test_number_out_of_range() -> None:
    t = CompiledTransform.from_config({"request_rules": [{"op": "convert", "field": "n", "type": "float"}]})
    assert t.request_body(b'{"n": "1e3"}', "") == b'{"n":1000.0}'
    with pytest.raises(TransformationError) as info:
        t.request_body(b'{"n": "1e400"}', "")
    assert_400(info.value, "n", "convert:n")


def test_empty_bodies_and_non_json_answers_pass_through() -> None:
    t = compiled()
    assert t.request_body(b"", "v1") == b""
    assert t.request_body(b"  \n", "v1") == b"  \n"
    assert t.response_body(b"<html>502</html>", "v1") == b"<html>502</html>"
    assert t.response_body(b"", "v1") == b""


def test_datetime_conversion_is_written_as_iso_8601() -> None:
    t = CompiledTransform.from_config(
        {"request_rules": [{"op": "convert", "field": "at", "type": "datetime"}, {"op": "convert", "field": "ts", "type": "epoch"}]}
    )
    out = orjson.loads(t.request_body(b'{"at": 0, "ts": "1970-01-01T00:01:00Z"}', ""))
    assert out == {"at": "1970-01-01T00:00:00+00:00", "ts": 60}


# -- config validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "loc_or_words"),
    [
        ({"colour": 1}, ("colour",)),
        ({"request_headers": {"add": {"Bad Name": "x"}}}, ("request_headers", "add")),
        ({"response_headers": {"add": {"X-A": "a\r\nInjected: 1"}}}, ("response_headers", "add")),
        ({"request_headers": {"drop": ["x"]}}, ("request_headers", "drop")),
        ({"query": {"remove": [""]}}, ("query", "remove")),
        ({"request_rules": [{"op": "rename", "field": "a"}]}, ("request_rules", 0, "to")),
        ({"mappings": [{"source": "v1", "target": "v2", "fields": {"a": "x", "b": "x"}}], "backend_version": "v2"}, ("mappings", 0, "fields")),
        ({"mappings": [{"source": "v1", "target": "v1"}], "backend_version": "v1"}, ("mappings", 0)),
        ({"mappings": [{"source": "v1", "target": "v2"}]}, "backend_version: required"),
        ({"mappings": [{"source": "v1", "target": "v2"}], "backend_version": "v3"}, "backend_version: 'v3'"),
        (
            {"mappings": [{"source": "v1", "target": "v2"}], "backend_version": "v2", "default_client_version": "v0"},
            "default_client_version",
        ),
        ({"client_version_path_segment": -1}, ("client_version_path_segment",)),
    ],
)
def test_bad_route_config(config: dict[str, Any], loc_or_words: tuple[Any, ...] | str) -> None:
    with pytest.raises(ValidationError) as info:
        RouteTransform.model_validate(config)
    if isinstance(loc_or_words, tuple):
        assert loc_or_words in error_locs(info.value)
    else:
        assert loc_or_words in str(info.value)


def test_route_transform_defaults() -> None:
    spec = RouteTransform()
    assert spec.client_version_header == "X-API-Version"
    assert spec.default_client_version is None and spec.backend_version is None
    assert spec.mappings == [] and spec.request_rules == [] and spec.query.add == {}


# -- property through bytes -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "agent_id": json_values,
            "agent_name": json_values,
            "agent_status": json_values,
            "items": st.lists(st.fixed_dictionaries({}, optional={"agent_id": json_values}), max_size=3),
        },
    )
)
def test_property_request_then_response_round_trips_bytes(v1: dict[str, Any]) -> None:
    t = CompiledTransform.from_config(
        {
            "backend_version": "v2",
            "mappings": [
                {
                    "source": "v1",
                    "target": "v2",
                    "fields": {"agent_id": "id", "agent_name": "name", "agent_status": "status", "items[].agent_id": "items[].id"},
                }
            ],
        }
    )
    assert orjson.loads(t.response_body(t.request_body(orjson.dumps(v1), "v1"), "v1")) == v1
