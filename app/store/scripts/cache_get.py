"""Twin of lua/cache_get.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._cache_common import b, hash_of, now_ms, zset_of


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[Any]:
    entry_key, lru_key, stats_key, lock_key, pass_key, vary_key = keys
    mode, token, lock_ms, entry_id, vary_used, margin = (b(a) for a in args)
    now = now_ms(db)
    entry = hash_of(db, entry_key) or {}
    meta = entry.get(b"t")
    fresh = swr = stored = 0
    if meta is not None:
        parts = meta.split(b" ")
        fresh, swr, stored = int(parts[0]), int(parts[1]), int(parts[3])

    def lock() -> int:
        if db.exists(lock_key):
            return 0
        db.set(lock_key, token, int(lock_ms))
        return 1

    def count(field: bytes) -> None:
        stats = hash_of(db, stats_key, create=True)
        assert stats is not None
        stats[field] = b(int(stats.get(field, b"0")) + 1)

    def touch() -> None:
        lru = zset_of(db, lru_key)
        if lru is not None and entry_id in lru:
            lru[entry_id] = now

    if mode == b"2":
        if meta is not None and (fresh - now) * 1000 > (fresh - stored) * int(margin):
            return [5, 0, now, meta]
        return [6, lock(), now, meta]

    if meta is not None and now < fresh:
        touch()
        count(b"hits")
        return [1, 0, now, meta, entry.get(b"h"), entry.get(b"b")]

    if meta is not None and now < swr:
        touch()
        count(b"hits")
        got = lock() if mode == b"0" else 0
        return [4, got, now, meta, entry.get(b"h"), entry.get(b"b")]

    if meta is None:
        vary = db.get(vary_key) or b""
        if vary != vary_used:
            return [3, 0, now, vary]

    state = 0
    if mode == b"0" and not db.exists(pass_key):
        state = lock()
        if state == 0:
            held = db.get(lock_key)
            if isinstance(held, bytes) and not held.endswith(b"!"):
                left = db.pttl(lock_key)
                db.set(lock_key, held + b"!", left if left >= 0 else None)
            return [2, 0, now, meta, entry.get(b"h"), entry.get(b"b")]
    count(b"misses")
    return [0, state, now, meta, entry.get(b"h"), entry.get(b"b")]
