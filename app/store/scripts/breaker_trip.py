"""Twin of lua/breaker_trip.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._breaker import move, read, view


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[object]:
    key = keys[0]
    open_us = int(float(args[0]) * 1000)
    now = db.now_us()
    h = read(db, key)
    if h[b"state"] == b"closed" and open_us > 0:
        move(db, key, h, "open", now, open_us)
        return view(h, now, 1, 1)
    return view(h, now, 0, 0)
