"""Rules declared in config: a fixed set of named operations, since a config file can't hold code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from app.transform.converter import ConvertType, DataConverter
from app.transform.paths import parse_path
from app.transform.rules import (
    OP_TRANSFORMERS,
    Direction,
    RemoveRule,
    SetRule,
    TemplateRule,
    TransformationRule,
    compile_template,
    make_converter_rule,
)

RuleOp = Literal["rename", "set", "default", "remove", "uppercase", "lowercase", "convert", "template"]

# The parameter each op needs; every other parameter is refused, so a typo'd op is loud.
_PARAMS: dict[str, str | None] = {
    "rename": "to",
    "set": "value",
    "default": "value",
    "remove": None,
    "uppercase": None,
    "lowercase": None,
    "convert": "type",
    "template": "template",
}
# Ops that may address each element of a list with a trailing [] ("tags[]").
_EACH_OPS = frozenset({"uppercase", "lowercase", "convert"})
_REQUIRED = "\x00required"  # marks a missing parameter so its own validator reports it


class RuleSpec(BaseModel):
    """One declared rule, e.g. ``{op: rename, field: agent_id, to: id}``.

    ops: ``rename`` (to), ``set`` (value), ``default`` (value, only when the field is absent),
    ``remove``, ``uppercase``, ``lowercase``, ``convert`` (type: str, int, float, bool, datetime,
    epoch), ``template`` (template, e.g. ``"{first} {last}"`` over the field's sibling fields).
    ``field`` and ``to`` are dotted paths with ``[]`` for each element of a list. ``name`` is
    what errors call the rule; it defaults to ``"<op>:<field>"``.
    """

    model_config = ConfigDict(extra="forbid")

    op: RuleOp
    field: str
    to: str | None = None
    value: Any = None
    type: ConvertType | None = None
    template: str | None = None
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _mark_missing_params(cls, data: Any) -> Any:
        # A missing required parameter would otherwise never reach a field validator, and a
        # model-level error can't name the field.
        if isinstance(data, Mapping):
            op = data.get("op")
            # Only a string can name an op; anything else (a list, a dict) is left to the op field's
            # own error instead of failing here with a TypeError (a 500 on the admin API).
            param = _PARAMS.get(op) if isinstance(op, str) else None
            if param is not None and param not in data:
                data = {**data, param: _REQUIRED}
        return data

    @field_validator("field")
    @classmethod
    def _field_path(cls, value: str, info: ValidationInfo) -> str:
        path = parse_path(value)
        op = info.data.get("op")
        if path.trailing_each and op not in _EACH_OPS:
            raise ValueError(f"a trailing [] (each element) only works with {', '.join(sorted(_EACH_OPS))}")
        return value

    @field_validator("to", "value", "type", "template", mode="before")
    @classmethod
    def _param_for_op(cls, value: Any, info: ValidationInfo) -> Any:
        op = info.data.get("op")
        if op is None:
            return None if value is _REQUIRED else value  # the op's own error says it all
        wanted = _PARAMS[op]
        if value is _REQUIRED:
            raise ValueError(f"required by op {op!r}")
        if info.field_name != wanted:
            raise ValueError(f"not used by op {op!r}" + (f" (it takes {wanted!r})" if wanted else ""))
        return value

    @field_validator("to")
    @classmethod
    def _to_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        to = parse_path(value)
        field = info.data.get("field")
        if field is not None and parse_path(field).each_count != to.each_count:
            raise ValueError(f"needs as many [] as field {field!r}")
        if to.trailing_each:
            raise ValueError("a trailing [] can't be renamed to; rename the list's own key")
        return value

    @field_validator("value")
    @classmethod
    def _json_value(cls, value: Any) -> Any:
        try:
            orjson.dumps(value)
        except TypeError as exc:
            raise ValueError(f"must be a JSON value: {exc}") from None
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            compile_template(value)
        return value

    @property
    def rule_name(self) -> str:
        return self.name or f"{self.op}:{self.field}"


def rule_from_spec(
    spec: RuleSpec | Mapping[str, Any],
    direction: Direction = "request",
    converter: DataConverter | None = None,
) -> TransformationRule:
    """The TransformationRule a declared rule stands for (a mapping is validated first)."""
    if not isinstance(spec, RuleSpec):
        spec = RuleSpec.model_validate(spec)
    name, path = spec.rule_name, spec.field
    if spec.op == "rename":
        return TransformationRule(name, path, spec.to or "", direction=direction, keep_source=False)
    if spec.op in ("set", "default"):
        return SetRule(
            name, path, path, direction=direction, value=spec.value, only_if_missing=spec.op == "default"
        )
    if spec.op == "remove":
        return RemoveRule(name, path, path, direction=direction)
    if spec.op == "template":
        return TemplateRule(name, path, path, direction=direction, template=spec.template or "")
    if spec.op == "convert":
        return make_converter_rule(name, path, spec.type or "", direction, converter or DataConverter())
    return TransformationRule(name, path, path, OP_TRANSFORMERS[spec.op], direction)
