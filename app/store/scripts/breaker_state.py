"""Twin of lua/breaker_state.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._breaker import read, view


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[object]:
    return view(read(db, keys[0]), db.now_us(), 1, 0)
