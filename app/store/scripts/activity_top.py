"""Twin of lua/activity_top.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._activity import current_epoch, seen_epoch
from app.store.scripts._redis import zset_of


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[bytes | int]:
    current, previous, meta_key = keys
    window, many = int(args[0]), int(args[1])
    epoch = current_epoch(db, window)
    seen = seen_epoch(db, meta_key)
    sources = [current, previous] if seen == epoch else [current] if seen == epoch - 1 else []
    totals: dict[bytes, float] = {}
    for key in sources:
        for member, score in (zset_of(db, key) or {}).items():
            totals[member] = totals.get(member, 0.0) + score
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:many]
    out: list[bytes | int] = []
    for member, count in ranked:
        out += [member, int(count)]  # Redis turns a Lua number into an integer reply
    return out
