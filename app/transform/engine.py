"""The seed's TransformationEngine: schema mapping plus rules, for requests and responses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.transform.converter import DataConverter
from app.transform.mapper import SchemaMapper, apply_chain
from app.transform.paths import apply_to_objects, json_copy
from app.transform.rules import TransformationRule


class TransformationEngine:
    """``transform_request(data, client_version, backend_version)`` maps the client's fields to
    the backend's and then runs the request rules; ``transform_response(data, backend_version,
    client_version)`` runs the response rules on the backend's answer and then maps it back.
    Rules therefore always see the backend's field names (see ``app.transform.rules``).
    Inputs are never modified; versions with no mapping between them pass through unchanged.
    """

    def __init__(
        self, schema_mapper: SchemaMapper | None = None, converter: DataConverter | None = None
    ) -> None:
        self.schema_mapper = schema_mapper or SchemaMapper()
        self.converter = converter or DataConverter()
        self._rules: list[TransformationRule] = []

    @property
    def rules(self) -> tuple[TransformationRule, ...]:
        return tuple(self._rules)

    def add_transformation(self, rule: TransformationRule) -> None:
        """Add a rule; one with the same name is replaced where it stands, so reloading a
        config doesn't reorder or duplicate rules."""
        for i, existing in enumerate(self._rules):
            if existing.name == rule.name:
                self._rules[i] = rule
                return
        self._rules.append(rule)

    def remove_transformation(self, name: str) -> bool:
        before = len(self._rules)
        self._rules = [r for r in self._rules if r.name != name]
        return len(self._rules) != before

    def transform_request(self, data: Any, source_schema: str, target_schema: str) -> Any:
        chain = self.schema_mapper.chain(source_schema, target_schema) or ()
        return run_rules(apply_chain(json_copy(data), chain), self._for("request"))

    def transform_response(self, data: Any, source_schema: str, target_schema: str) -> Any:
        chain = self.schema_mapper.chain(source_schema, target_schema) or ()
        return apply_chain(run_rules(json_copy(data), self._for("response")), chain)

    def _for(self, direction: str) -> list[TransformationRule]:
        return [r for r in self._rules if r.applies_to(direction)]


def run_rules(data: Any, rules: Sequence[TransformationRule]) -> Any:
    """Apply rules to data the caller owns (it is edited in place)."""
    if not rules:
        return data

    def apply_rules(obj: dict[str, Any]) -> dict[str, Any]:
        for rule in rules:
            rule.apply(obj)
        return obj

    return apply_to_objects(data, apply_rules)
