"""Twin of lua/breaker_record.lua."""

from __future__ import annotations

import math
from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._breaker import BUCKETS, move, state_of, view
from app.store.scripts._hash import hash_of, hset, num


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[object]:
    h = hash_of(db, keys[0])
    call_gen, outcome, probe, ok_batch = (int(a) for a in args[:4])
    failure_threshold, success_threshold, recovery_ms = int(args[4]), int(args[5]), float(args[6])
    rate_threshold, window_ms, min_calls = float(args[7]), float(args[8]), int(args[9])
    now = db.now_us()
    state = state_of(h)
    width = window_ms * 100
    index = math.floor(now / width)

    def bucket_add(calls: int, fails: int) -> None:
        field = f"w{index % BUCKETS}".encode()
        c = f = 0
        old = h.get(field)
        if old is not None:
            oi, oc, of = old.split(b":")
            if int(oi) == index:
                c, f = int(oc), int(of)
        h[field] = f"{index}:{c + calls}:{f + fails}".encode()

    def rate_trips() -> bool:
        calls = fails = 0
        for i in range(BUCKETS):
            value = h.get(f"w{i}".encode())
            if value is not None:
                oi, oc, of = value.split(b":")
                if int(oi) > index - BUCKETS:
                    calls += int(oc)
                    fails += int(of)
        return calls >= min_calls and fails >= rate_threshold * calls

    if rate_threshold > 0 and ok_batch > 0 and state == b"closed":
        bucket_add(ok_batch, 0)
    if call_gen != num(h, "gen"):
        return view(h, now, 0, 0)

    event = 0
    recovery_us = int(recovery_ms * 1000)
    if state == b"closed":
        if outcome == 1:
            failures = num(h, "failures") + 1
            trip = failures >= failure_threshold
            if rate_threshold > 0:
                bucket_add(1, 1)
                trip = trip or rate_trips()
            if trip:
                move(h, "open", now, recovery_us)
                event = 1
            else:
                hset(h, state="closed", gen=num(h, "gen"), failures=failures)
                event = 2 if failures == 1 else 0
        elif outcome == 0:
            if rate_threshold > 0:
                bucket_add(1, 0)
            if num(h, "failures") > 0:
                hset(h, failures=0)
                event = 2
    elif state == b"half_open":
        probes = num(h, "probes")
        if probe == 1 and probes > 0:
            hset(h, probes=probes - 1)
        if outcome == 1:
            move(h, "open", now, recovery_us)
            event = 1
        elif outcome == 0:
            successes = num(h, "successes") + 1
            if successes >= success_threshold:
                move(h, "closed", now)
                event = 1
            else:
                hset(h, successes=successes)
    return view(h, now, 1, event)
