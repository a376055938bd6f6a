"""Twin of lua/breaker_trip.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._breaker import move, state_of, view
from app.store.scripts._hash import hash_of


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[object]:
    h = hash_of(db, keys[0])
    open_us = int(float(args[0]) * 1000)
    now = db.now_us()
    if state_of(h) == b"closed" and open_us > 0:
        move(h, "open", now, open_us)
        return view(h, now, 1, 1)
    return view(h, now, 0, 0)
