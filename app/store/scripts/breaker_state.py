"""Twin of lua/breaker_state.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._breaker import view


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[object]:
    value = db.get(keys[0])
    return view(value if isinstance(value, dict) else {}, db.now_us(), 1, 0)
