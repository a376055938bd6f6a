"""Twin of lua/cache_set.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._cache_common import (
    add_bytes,
    entry_key,
    forget,
    lru_score,
    purge_expired,
)
from app.store.scripts._redis import arg, hash_of, writable, zset_of


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[Any]:
    entry, lru_key, exp_key, paths_key, lock_key, vary_key, pass_key, stats_key, uri_key, sizes_key = keys
    member, token, vary = arg(args[0]), arg(args[7]), arg(args[8])
    if token and (hash_of(db, uri_key) or {}).get(member) != token:
        # No longer listed under its token: a purge since the lookup; refused, the lock given back.
        _release(db, lock_key, token)
        return [0, 0, 0]
    fresh_ms, swr_ms, grace_ms, max_entries = int(args[1]), int(args[2]), int(args[3]), int(args[6])
    now_us = db.now_us()
    now = now_us // 1000  # what now_ms(db) gives; the LRU score takes the microseconds
    fresh = now + fresh_ms
    swr = fresh + swr_ms
    stale = fresh + max(grace_ms, swr_ms)
    kept = max(stale, fresh + int(args[12]))
    keep = kept - now

    # Every write replaces the three fields (no DEL first), then the entry's deadline.
    writable(db, entry).update({b"t": b"%d %d %d %d" % (fresh, swr, stale, now), b"h": arg(args[4]), b"b": arg(args[5])})
    db.pexpire(entry, keep)
    for key, score in ((lru_key, lru_score(writable(db, stats_key), now_us)), (exp_key, kept), (paths_key, 0)):
        writable(db, key)[member] = score
    size = len(arg(args[4])) + len(arg(args[5]))
    sizes = writable(db, sizes_key)
    before = int(sizes.get(member, 0))
    sizes[member] = b"%d" % size
    add_bytes(db, stats_key, size - before)
    if vary:
        db.set(vary_key, vary, keep)
        db.delete(pass_key)
    else:
        db.delete(vary_key, pass_key)

    entries = writable(db, uri_key)
    entries[member] = b"1"
    if db.pttl(uri_key) < keep:
        db.pexpire(uri_key, keep)
    if len(entries) > 64:
        for listed in list(entries):
            if not db.exists(entry_key(arg(args[9]), listed)):
                del entries[listed]

    index_keys = (lru_key, exp_key, paths_key)
    purged = purge_expired(db, index_keys, now, 16, sizes_key, stats_key)

    # The bounds in entries and in bytes (0: none): the least recently read go first. The dicts
    # are the live sorted set and hash: an emptied sorted set is empty here too.
    evicted = 0
    max_bytes = int(args[13])
    lru = zset_of(db, lru_key) or {}
    stats = writable(db, stats_key)
    while lru and (len(lru) > max_entries or (max_bytes and int(stats[b"bytes"]) > max_bytes)):
        victim = min(lru, key=lambda m: (lru[m], m))
        forget(db, index_keys, victim, sizes_key, stats_key)
        db.delete(entry_key(arg(args[9]), victim))
        evicted += 1
    if evicted:
        stats = writable(db, stats_key)
        stats[b"evictions"] = b"%d" % (int(stats.get(b"evictions", b"0")) + evicted)

    if token:
        _release(db, lock_key, token)
    return [evicted, purged, 1]


def _release(db: MemoryDB, lock_key: str, token: bytes) -> None:
    if db.get(lock_key) in (token, token + b"!"):
        db.delete(lock_key)
        # Redis PUBLISHes here; the memory store has one replica, whose waiters the caller wakes.
