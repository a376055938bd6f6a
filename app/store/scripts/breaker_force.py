"""Twin of lua/breaker_force.lua: open, close or reset a breaker by hand."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._breaker import clear_window, read
from app.store.scripts._redis import arg, ceil_ms, hset


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[object]:
    key = keys[0]
    to, open_us = arg(args[0]), int(float(args[1]) * 1000)
    now = db.now_us()
    gen = read(db, key)[b"gen"] + 1
    clear_window(db, key)
    state, open_until = b"closed", 0
    if to == b"open":
        state, open_until = b"open", now + open_us
        h = db.get(key)
        hset(db, key, opened=(int(h.get(b"opened", b"0")) if isinstance(h, dict) else 0) + 1)
    elif to == b"reset":
        hset(db, key, opened=0)
    hset(db, key, state=state, gen=gen, failures=0, successes=0, probes=0, open_until=open_until, changed_at=now)
    return [1, state, gen, 0, ceil_ms(open_us) if state == b"open" else 0, 1]
