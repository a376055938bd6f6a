"""Twin of lua/cache_release.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._redis import arg


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> int:
    lock_key, pass_key = keys
    token, pass_ms = arg(args[0]), int(args[1])
    if db.get(lock_key) not in (token, token + b"!"):
        return 0
    db.delete(lock_key)
    if pass_ms > 0:
        db.set(pass_key, b"1", pass_ms)
    return 1
