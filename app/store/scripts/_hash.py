"""Helpers the twins share: a Redis hash as the memory store keeps it (bytes field -> bytes value)."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB


def hash_of(db: MemoryDB, key: str) -> dict[bytes, bytes]:
    """The hash at ``key``, created empty when missing (as HSET would)."""
    value = db.get(key)
    if not isinstance(value, dict):
        value = {}
        db.set(key, value)
    return value


def hset(h: dict[bytes, bytes], **fields: Any) -> None:
    for name, value in fields.items():
        h[name.encode()] = value if isinstance(value, bytes) else str(value).encode()


def num(h: dict[bytes, bytes], name: str) -> int:
    raw = h.get(name.encode())
    return int(raw) if raw is not None else 0


def ceil_ms(us: int) -> int:
    return -(-us // 1000)
