"""Checks the models cannot express: numbers the store can keep exactly.

pydantic accepts any int, but orjson refuses integers beyond 64 bits and Lua keeps integers exactly
only up to 2^53, so a larger number in a route or a limit is bad input (400 naming the field), not a
500 when it is written.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError

LARGEST = 2**53


def _too_large(value: Any, path: tuple[str | int, ...]) -> list[dict[str, Any]]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float) and abs(value) > LARGEST:
        return [{"loc": path, "msg": f"must be at most {LARGEST} in size", "type": "value_error"}]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _too_large(v, (*path, k))]
    if isinstance(value, list | tuple):
        return [e for i, v in enumerate(value) for e in _too_large(v, (*path, i))]
    return []


def check_numbers(document: Any, prefix: tuple[str, ...] = ("body",)) -> None:
    """Raise the 400 for every number in ``document`` that the store cannot keep exactly."""
    errors = _too_large(document, prefix)
    if errors:
        raise RequestValidationError(errors)
