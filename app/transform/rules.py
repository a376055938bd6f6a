"""Transformation rules: the seed's Python callables, and the named operations a config can hold.

Where rules run: a rule addresses fields in the *backend's* schema, so one set of rules serves
every client version. Request rules (``direction="request"``, the default) run after the request
is mapped from the client's version to the backend's; response rules (``"response"``) run on the
backend's answer before it is mapped back to the client's version; ``"both"`` runs in both.
A rule whose input field is absent does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from string import Formatter
from typing import Any, Literal

import orjson

from app.transform.converter import DataConverter, resolve_type, type_name
from app.transform.errors import TransformationError
from app.transform.paths import (
    MISSING,
    FieldPath,
    extract,
    get_at,
    json_copy,
    locations,
    map_tree,
    parse_path,
    place,
    present,
)

Direction = Literal["request", "response", "both"]
DIRECTIONS: tuple[str, ...] = ("request", "response", "both")


def _identity(value: Any) -> Any:
    return value


@dataclass(eq=False)
class TransformationRule:
    """``transformer(value)`` of ``source_field`` is written to ``target_field``.

    Same field: the value is replaced in place; with a trailing ``[]`` (``tags[]``) each element
    is. Different fields: the source is kept unless ``keep_source`` is False (a move); both
    paths need the same number of ``[]`` (``items[].a`` -> ``items[].b`` works per element).
    An exception from ``transformer`` becomes a TransformationError naming the field and rule.
    """

    name: str
    source_field: str
    target_field: str
    transformer: Callable[[Any], Any] = _identity
    direction: Direction = "request"
    keep_source: bool = True
    _source: FieldPath = field(init=False, repr=False)
    _target: FieldPath = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}")
        self._source = parse_path(self.source_field)
        self._target = parse_path(self.target_field)
        if self._source != self._target:
            if self._source.each_count != self._target.each_count:
                raise ValueError(
                    f"{self.source_field!r} and {self.target_field!r} need the same number of []"
                )
            if self._source.trailing_each or self._target.trailing_each:
                raise ValueError("a trailing [] only works when source and target are the same field")

    def applies_to(self, direction: str) -> bool:
        return self.direction == direction or self.direction == "both"

    def apply(self, obj: dict[str, Any]) -> None:
        """Apply the rule to one object, in place."""
        try:
            self._apply(obj)
        except TransformationError as exc:
            raise exc.with_context(field=self.source_field, rule=self.name) from None

    def _apply(self, obj: dict[str, Any]) -> None:
        if self._source == self._target:
            for container, key in locations(obj, self._source):
                value = get_at(container, key)
                if value is not MISSING:
                    container[key] = self._call(value)
            return
        tree = extract(obj, self._source, pop=not self.keep_source)
        # A move takes list structure along, as a mapping does (extract may have dropped a list
        # of emptied objects); a copy only writes where there are values.
        if present(tree) or (not self.keep_source and tree is not MISSING):
            place(obj, self._target, map_tree(tree, self._call))

    def _call(self, value: Any) -> Any:
        try:
            return self.transformer(value)
        except TransformationError:
            raise
        except Exception as exc:  # a rule's bug or a value it can't take: the input's fault to the client
            raise TransformationError(
                f"rule {self.name!r} failed on field {self.source_field!r}: {type(exc).__name__}: {exc}",
                field=self.source_field,
                rule=self.name,
            ) from exc


@dataclass(eq=False)
class SetRule(TransformationRule):
    """``set``: the field gets ``value``; ``default``: only when the field is absent."""

    value: Any = None
    only_if_missing: bool = False

    def _apply(self, obj: dict[str, Any]) -> None:
        for container, key in locations(obj, self._target, create=True):
            if not (self.only_if_missing and key in container):
                container[key] = json_copy(self.value)


@dataclass(eq=False)
class RemoveRule(TransformationRule):
    def _apply(self, obj: dict[str, Any]) -> None:
        for container, key in locations(obj, self._target):
            container.pop(key, None)


@dataclass(eq=False)
class TemplateRule(TransformationRule):
    """The field becomes ``template`` filled from its sibling fields: for ``user.full_name``,
    ``"{first} {last}"`` reads ``user.first`` and ``user.last``. Absent inputs: no change."""

    template: str = ""
    _parts: tuple[tuple[str, FieldPath | None, str], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._parts = compile_template(self.template)

    def _apply(self, obj: dict[str, Any]) -> None:
        for container, key in locations(obj, self._target):
            text = self._render(container)
            if text is not MISSING:
                container[key] = text

    def _render(self, scope: dict[str, Any]) -> Any:
        out: list[str] = []
        for literal, path, spec in self._parts:
            out.append(literal)
            if path is None:
                continue
            value = extract(scope, path)
            if value is MISSING:
                return MISSING
            try:
                out.append(_format(value, spec))
            except (ValueError, TypeError) as exc:
                raise TransformationError(
                    f"template of rule {self.name!r}: can't format {type_name(value)} "
                    f"field {path.text!r} with {spec!r}",
                    field=path.text,
                ) from exc
        return "".join(out)


def compile_template(text: str) -> tuple[tuple[str, FieldPath | None, str], ...]:
    """``"{first} {last}"`` as (literal, field, format spec) parts; raises ValueError when bad."""
    parts: list[tuple[str, FieldPath | None, str]] = []
    for literal, name, spec, conversion in Formatter().parse(text):
        if name is None:
            parts.append((literal, None, ""))
            continue
        if not name:
            raise ValueError("every {} in a template needs a field name, e.g. {first}")
        if conversion or "{" in (spec or ""):
            raise ValueError(f"{{{name}}}: only a format spec like {{price:.2f}} is supported")
        path = parse_path(name)
        if path.each_count:
            raise ValueError(f"{{{name}}}: template fields can't contain []")
        parts.append((literal, path, spec or ""))
    return tuple(parts)


def _format(value: Any, spec: str) -> str:
    # JSON spellings, so a template reads the same whatever language wrote the body.
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif value is None:
        value = "null"
    elif isinstance(value, (dict, list)):
        value = orjson.dumps(value).decode()
    return format(value, spec)


def _uppercase(value: Any) -> Any:
    if not isinstance(value, str):
        raise TransformationError(f"expected a string, got {type_name(value)}")
    return value.upper()


def _lowercase(value: Any) -> Any:
    if not isinstance(value, str):
        raise TransformationError(f"expected a string, got {type_name(value)}")
    return value.lower()


def make_converter_rule(
    name: str, field_path: str, to_type: str, direction: Direction, converter: DataConverter
) -> TransformationRule:
    type_ = resolve_type(to_type)

    def convert(value: Any) -> Any:
        return converter.convert(value, type_, field=field_path)

    return TransformationRule(name, field_path, field_path, convert, direction)


OP_TRANSFORMERS: dict[str, Callable[[Any], Any]] = {"uppercase": _uppercase, "lowercase": _lowercase}
