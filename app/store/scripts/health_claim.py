"""Twin of lua/health_claim.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._redis import arg


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> int:
    owner = arg(args[0])
    holder = db.get(keys[0])
    if holder is None or holder == owner:
        db.set(keys[0], owner, int(args[1]))
        return 1
    return 0
