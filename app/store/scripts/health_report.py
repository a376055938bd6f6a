"""Twin of lua/health_report.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._redis import arg, hash_of, hset


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[int]:
    key, url = keys[0], arg(args[0]).decode()
    ok, healthy_threshold, unhealthy_threshold = int(args[1]), int(args[2]), int(args[3])
    h = hash_of(db, key) or {}
    healthy = h.get(url.encode()) != b"0"
    oks, fails = int(h.get(f"{url}|ok".encode(), b"0")), int(h.get(f"{url}|fail".encode(), b"0"))
    oks, fails = (oks + 1, 0) if ok == 1 else (0, fails + 1)
    changed = 0
    if healthy and fails >= unhealthy_threshold:
        healthy, changed = False, 1
    elif not healthy and oks >= healthy_threshold:
        healthy, changed = True, 1
    hset(db, key, **{url: int(healthy), f"{url}|ok": oks, f"{url}|fail": fails})
    return [int(healthy), changed]
