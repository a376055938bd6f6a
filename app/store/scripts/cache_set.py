"""Twin of lua/cache_set.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._cache_common import b, entry_key, hash_of, integer, now_ms, purge_expired, zrem, zset_of


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[Any]:
    entry, lru_key, exp_key, paths_key, lock_key, vary_key, pass_key, stats_key = keys
    member, token, vary = b(args[0]), b(args[7]), b(args[8])
    fresh_ms, swr_ms, grace_ms, max_entries = integer(args[1]), integer(args[2]), integer(args[3]), integer(args[6])
    now = now_ms(db)
    fresh = now + fresh_ms
    swr = fresh + swr_ms
    stale = fresh + max(grace_ms, swr_ms)
    keep = stale - now

    db.set(entry, {b"t": b"%d %d %d %d" % (fresh, swr, stale, now), b"h": b(args[4]), b"b": b(args[5])}, keep)
    for key, score in ((lru_key, now), (exp_key, stale), (paths_key, 0)):
        z = zset_of(db, key, create=True)
        assert z is not None
        z[member] = score
    if vary:
        db.set(vary_key, vary, keep)
        db.delete(pass_key)
    else:
        db.delete(vary_key, pass_key)

    index_keys = (lru_key, exp_key, paths_key)
    purged = purge_expired(db, index_keys, now, 16)

    evicted = 0
    lru = zset_of(db, lru_key) or {}
    excess = len(lru) - max_entries
    while excess > 0:
        victim = min(lru, key=lambda m: (lru[m], m))
        zrem(db, lru_key, victim)
        zrem(db, exp_key, victim)
        zrem(db, paths_key, victim)
        db.delete(entry_key(b(args[9]), victim))
        evicted += 1
        excess -= 1
    if evicted:
        stats = hash_of(db, stats_key, create=True)
        assert stats is not None
        stats[b"evictions"] = b(int(stats.get(b"evictions", b"0")) + evicted)

    if token and db.get(lock_key) in (token, token + b"!"):
        db.delete(lock_key)
        # Redis PUBLISHes here; the memory store has one replica, whose waiters the caller wakes.
    return [evicted, purged]
