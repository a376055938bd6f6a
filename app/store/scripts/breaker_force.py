"""Twin of lua/breaker_force.lua: open, close or reset a breaker by hand."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._breaker import clear_window
from app.store.scripts._hash import ceil_ms, hash_of, hset, num


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[object]:
    h = hash_of(db, keys[0])
    to = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    open_us = int(float(args[1]) * 1000)
    now = db.now_us()
    gen = num(h, "gen") + 1
    clear_window(h)
    state, open_until = "closed", 0
    if to == "open":
        state, open_until = "open", now + open_us
        hset(h, opened=num(h, "opened") + 1)
    elif to == "reset":
        hset(h, opened=0)
    hset(h, state=state, gen=gen, failures=0, successes=0, probes=0, open_until=open_until, changed_at=now)
    return [1, state.encode(), gen, 0, ceil_ms(open_us) if state == "open" else 0, 1]
