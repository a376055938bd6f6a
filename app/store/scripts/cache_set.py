"""Twin of lua/cache_set.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._cache_common import b, forget, hash_of, now_ms, purge_expired, zrem, zset_of


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[Any]:
    entry_key, lru_key, exp_key, idx_key, paths_key, lock_key, vary_key, pass_key, stats_key = keys
    (entry_id, path, fresh_ms, swr_ms, grace_ms, head, body, max_entries, token, vary,
     entry_prefix, _channel) = (b(a) for a in args)
    roles = {"lru": lru_key, "exp": exp_key, "idx": idx_key, "paths": paths_key}
    now = now_ms(db)
    fresh = now + int(fresh_ms)
    swr = fresh + int(swr_ms)
    stale = fresh + max(int(grace_ms), int(swr_ms))
    keep = stale - now

    idx = hash_of(db, idx_key, create=True)
    assert idx is not None
    old = idx.get(entry_id)
    if old is not None and old != path:
        zrem(db, paths_key, old + b"\0" + entry_id)
    db.set(entry_key, {b"t": b"%d %d %d %d" % (fresh, swr, stale, now), b"h": head, b"b": body}, keep)
    for key, member, score in ((lru_key, entry_id, now), (exp_key, entry_id, stale),
                               (paths_key, path + b"\0" + entry_id, 0)):
        z = zset_of(db, key, create=True)
        assert z is not None
        z[member] = score
    idx = hash_of(db, idx_key, create=True)
    assert idx is not None
    idx[entry_id] = path
    if vary:
        db.set(vary_key, vary, keep)
    else:
        db.delete(vary_key)
    db.delete(pass_key)

    purged = purge_expired(db, roles, now, 16)

    evicted = 0
    lru = zset_of(db, lru_key) or {}
    excess = len(lru) - int(max_entries)
    while excess > 0:
        victim = min(lru, key=lambda m: (lru[m], m))
        forget(db, roles, victim)
        db.delete(entry_prefix.decode() + victim.decode())
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
