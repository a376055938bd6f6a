"""The one error the transformation engine raises for bad input."""

from __future__ import annotations


class TransformationError(Exception):
    """A body, field or value that can't be transformed.

    The client's input (or the backend's answer) is at fault, not the gateway, so the proxy turns
    this into a 400 with ``to_dict()`` as the body, never a 500.
    """

    def __init__(
        self,
        message: str = "transformation failed",
        *,
        field: str | None = None,
        rule: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.rule = rule

    def with_context(self, *, field: str | None = None, rule: str | None = None) -> TransformationError:
        """Fill in what the raiser didn't know (a converter knows the field, not the rule)."""
        if self.field is None:
            self.field = field
        if self.rule is None:
            self.rule = rule
        return self

    def to_dict(self) -> dict[str, str | None]:
        return {"error": self.message, "field": self.field, "rule": self.rule}

    def __str__(self) -> str:
        where = ", ".join(f"{k} {v!r}" for k, v in (("field", self.field), ("rule", self.rule)) if v)
        return f"{self.message} ({where})" if where else self.message
