"""Twin of lua/activity_add.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._activity import current_epoch, seen_epoch
from app.store.scripts._redis import arg, hset, writable, zset_of


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> int:
    current, previous, meta_key = keys
    window, keep = int(args[0]), int(args[1])
    epoch = current_epoch(db, window)
    seen = seen_epoch(db, meta_key)
    if seen != epoch:
        if seen == epoch - 1 and db.exists(current):
            db.set(previous, db.get(current))  # RENAME (the EXPIRE below sets the deadline)
            db.delete(current)
        else:
            db.delete(current, previous)
        hset(db, meta_key, epoch=epoch)
    pairs = args[2:]
    for client, count in zip(pairs[0::2], pairs[1::2], strict=True):
        counts = writable(db, current)
        member = arg(client)
        counts[member] = counts.get(member, 0.0) + float(arg(count))
    counts = zset_of(db, current)
    if counts is not None and len(counts) > keep:
        # ZREMRANGEBYRANK 0 -(keep+1): the lowest scores go, ties by member (Redis's order).
        ranked = sorted(counts.items(), key=lambda item: (item[1], item[0]))
        for member, _ in ranked[:len(counts) - keep]:
            del counts[member]
        if not counts:
            db.delete(current)
    for key in keys:
        db.pexpire(key, window * 2 * 1000)
    return len(zset_of(db, current) or {})
