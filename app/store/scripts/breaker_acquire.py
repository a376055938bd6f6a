"""Twin of lua/breaker_acquire.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._breaker import state_of, view
from app.store.scripts._hash import hash_of, hset, num


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[object]:
    h = hash_of(db, keys[0])
    max_probes, lease_us = int(args[0]), int(float(args[1]) * 1000)
    now = db.now_us()
    state = state_of(h)
    if state == b"closed":
        return view(h, now, 1, 0)
    event = 0
    if state == b"open":
        if now < num(h, "open_until"):
            return view(h, now, 0, 0)
        hset(h, state="half_open", gen=num(h, "gen") + 1, successes=0, probes=0, open_until=0,
             changed_at=now)
        event = 1
    probes = num(h, "probes")
    if probes > 0 and now >= num(h, "probe_until"):
        probes = 0
    if probes >= max_probes:
        hset(h, probes=probes)
        return view(h, now, 0, event)
    hset(h, probes=probes + 1, probe_until=now + lease_us)
    return view(h, now, 1, event)
