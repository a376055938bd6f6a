"""Twin of lua/breaker_record.lua."""

from __future__ import annotations

import math
from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._breaker import BUCKETS, move, read, view
from app.store.scripts._redis import hash_of, hset


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[object]:
    key = keys[0]
    call_gen, outcome, probe, ok_batch = (int(a) for a in args[:4])
    failure_threshold, success_threshold = int(args[4]), int(args[5])
    recovery_us = int(float(args[6]) * 1000)
    rate_threshold, window_ms, min_calls = float(args[7]), float(args[8]), int(args[9])
    now = db.now_us()
    h = read(db, key)
    index = math.floor(now / (window_ms * 100))  # buckets of window_ms * 100 microseconds

    def bucket_add(calls: int, fails: int) -> None:
        field = f"w{index % BUCKETS}"
        c = f = 0
        old = (hash_of(db, key) or {}).get(field.encode())
        if old is not None:
            oi, oc, of = old.split(b":")
            if int(oi) == index:
                c, f = int(oc), int(of)
        hset(db, key, **{field: f"{index}:{c + calls}:{f + fails}"})

    def rate_trips() -> bool:
        calls = fails = 0
        stored = hash_of(db, key) or {}
        for i in range(BUCKETS):
            value = stored.get(f"w{i}".encode())
            if value is not None:
                oi, oc, of = value.split(b":")
                if int(oi) > index - BUCKETS:
                    calls += int(oc)
                    fails += int(of)
        return calls >= min_calls and fails >= rate_threshold * calls

    if rate_threshold > 0 and ok_batch > 0 and h[b"state"] == b"closed":
        bucket_add(ok_batch, 0)
    if call_gen != h[b"gen"]:
        return view(h, now, 0, 0)  # admitted before the last transition

    event = 0
    if h[b"state"] == b"closed":
        if outcome == 1:
            failures = h[b"failures"] + 1
            trip = failures >= failure_threshold
            if rate_threshold > 0:
                bucket_add(1, 1)
                trip = trip or rate_trips()
            if trip:
                move(db, key, h, "open", now, recovery_us)
                event = 1
            else:
                h[b"failures"] = failures
                hset(db, key, state="closed", gen=h[b"gen"], failures=failures)
                event = 2 if failures == 1 else 0
        elif outcome == 0:
            if rate_threshold > 0:
                bucket_add(1, 0)
            if h[b"failures"] > 0:
                h[b"failures"] = 0
                hset(db, key, failures=0)
                event = 2
    elif h[b"state"] == b"half_open":
        if probe == 1 and h[b"probes"] > 0:
            h[b"probes"] -= 1
            hset(db, key, probes=h[b"probes"])
        if outcome == 1:
            move(db, key, h, "open", now, recovery_us)
            event = 1
        elif outcome == 0:
            successes = h[b"successes"] + 1
            if successes >= success_threshold:
                move(db, key, h, "closed", now)
                event = 1
            else:
                hset(db, key, successes=successes)
    return view(h, now, 1, event)
