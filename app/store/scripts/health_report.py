"""Twin of lua/health_report.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._hash import hash_of, num


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[int]:
    h = hash_of(db, keys[0])
    url = str(args[0])
    ok, healthy_threshold, unhealthy_threshold = int(args[1]), int(args[2]), int(args[3])
    healthy = h.get(url.encode()) != b"0"
    oks, fails = num(h, f"{url}|ok"), num(h, f"{url}|fail")
    oks, fails = (oks + 1, 0) if ok == 1 else (0, fails + 1)
    changed = 0
    if healthy and fails >= unhealthy_threshold:
        healthy, changed = False, 1
    elif not healthy and oks >= healthy_threshold:
        healthy, changed = True, 1
    h[url.encode()] = b"1" if healthy else b"0"
    h[f"{url}|ok".encode()] = str(oks).encode()
    h[f"{url}|fail".encode()] = str(fails).encode()
    return [int(healthy), changed]
