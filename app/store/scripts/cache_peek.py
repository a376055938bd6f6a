"""Twin of lua/cache_peek.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> int:
    return 1 if any(db.exists(key) for key in keys) else 0
