"""Twin of lua/breaker_acquire.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._breaker import read, view
from app.store.scripts._redis import hset


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[object]:
    key = keys[0]
    max_probes, lease_us = int(args[0]), int(float(args[1]) * 1000)
    now = db.now_us()
    h = read(db, key)
    if h[b"state"] == b"closed":
        return view(h, now, 1, 0)
    event = 0
    if h[b"state"] == b"open":
        if now < h[b"open_until"]:
            return view(h, now, 0, 0)
        h.update({b"state": b"half_open", b"gen": h[b"gen"] + 1, b"probes": 0, b"open_until": 0})
        hset(db, key, state="half_open", gen=h[b"gen"], successes=0, probes=0, open_until=0, changed_at=now)
        event = 1
    probes = h[b"probes"]
    if probes > 0 and now >= h[b"probe_until"]:
        probes = 0  # the leases ran out: those probes' replicas are gone
    if probes >= max_probes:
        hset(db, key, probes=probes)
        return view(h, now, 0, event)
    hset(db, key, probes=probes + 1, probe_until=now + lease_us)
    return view(h, now, 1, event)
