"""Type conversion of single JSON values, strict enough that a wrong value is an error, not a guess."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Literal

from app.transform.errors import TransformationError

ConvertType = Literal["str", "int", "float", "bool", "datetime", "epoch"]
CONVERT_TYPES: tuple[str, ...] = ("str", "int", "float", "bool", "datetime", "epoch")

_PY_TYPES: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool", datetime: "datetime"}
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
# orjson (and most JSON consumers) stop at 64-bit integers; a bigger one would fail at encoding.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for error messages a client can act on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_text(value: str) -> str:
    text = value.strip()
    if "_" in text:  # Python accepts "1_000"; a JSON client doesn't mean that
        raise ValueError(text)
    return text


class DataConverter:
    """``convert(value, to_type, field=...)`` for ``str``, ``int``, ``float``, ``bool``,
    ``datetime`` (ISO 8601 text or epoch seconds in, ``datetime`` out; orjson writes it back as
    RFC 3339) and ``epoch`` (seconds since 1970 UTC; an ``int`` when whole). ``to_type`` is one of
    those names or the Python type. A naive datetime is taken as UTC when converted to epoch.
    A value that doesn't convert (``null`` included) raises TransformationError naming the field
    and the value's type.
    """

    def convert(self, value: Any, to_type: str | type, field: str | None = None) -> Any:
        name = resolve_type(to_type)
        try:
            return getattr(self, "_to_" + name)(value)
        except (ValueError, TypeError, OverflowError, OSError) as exc:
            where = f"field {field!r}: " if field else ""
            raise TransformationError(
                f"{where}cannot convert {type_name(value)} to {name}", field=field
            ) from exc

    @staticmethod
    def _to_str(value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if _is_number(value):
            return str(value)
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(type_name(value))

    @staticmethod
    def _to_int(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(type_name(value))
        if isinstance(value, str):
            text = _number_text(value)
            try:
                value = int(text)
            except ValueError:
                value = float(text)
        if isinstance(value, float):
            if not value.is_integer():  # also rejects nan and inf
                raise ValueError(value)
            value = int(value)
        if not _INT_MIN <= value <= _INT_MAX:
            raise OverflowError(value)
        return value

    @staticmethod
    def _to_float(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(type_name(value))
        result = float(_number_text(value)) if isinstance(value, str) else float(value)
        if not math.isfinite(result):  # JSON has no nan/inf
            raise ValueError(value)
        return result

    @staticmethod
    def _to_bool(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            text = value.strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
        raise ValueError(type_name(value))

    @staticmethod
    def _to_datetime(value: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        if isinstance(value, str):
            return datetime.fromisoformat(value.strip())
        if _is_number(value):
            if not math.isfinite(value):
                raise ValueError(value)
            return datetime.fromtimestamp(value, tz=timezone.utc)
        raise TypeError(type_name(value))

    @classmethod
    def _to_epoch(cls, value: Any) -> int | float:
        if isinstance(value, str):
            text = value.strip()
            try:
                seconds: float = float(_number_text(text))
            except ValueError:
                seconds = cls._timestamp(datetime.fromisoformat(text))
        elif isinstance(value, datetime):
            seconds = cls._timestamp(value)
        elif _is_number(value):
            seconds = value
        else:
            raise TypeError(type_name(value))
        if not math.isfinite(seconds):
            raise ValueError(value)
        return int(seconds) if float(seconds).is_integer() else float(seconds)

    @staticmethod
    def _timestamp(value: datetime) -> float:
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()


def resolve_type(to_type: str | type) -> str:
    name = _PY_TYPES.get(to_type) if isinstance(to_type, type) else to_type
    if name not in CONVERT_TYPES:
        raise ValueError(f"unknown type {to_type!r}; use one of {', '.join(CONVERT_TYPES)}")
    return name  # type: ignore[return-value]
