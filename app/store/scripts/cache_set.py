"""Twin of lua/cache_set.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._cache_common import (
    add_bytes,
    bucket_prefix,
    entry_key,
    forget,
    lru_score,
    member_of,
    purge_expired,
    unlist,
)
from app.store.scripts._redis import arg, hash_of, writable, zset_of


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[Any]:
    stats_key = keys[0]
    prefix = bucket_prefix(stats_key)
    entry_id = arg(args[1]).decode()
    base_id = arg(args[2]).decode() or entry_id
    entry_prefix = prefix + "e2:"
    entry, lock_key = entry_prefix + entry_id, prefix + "lock:" + entry_id
    vary_key, pass_key = prefix + "vary:" + base_id, prefix + "pass:" + entry_id
    lru_key, exp_key, paths_key, sizes_key = prefix + "lru", prefix + "exp", prefix + "paths", prefix + "sizes"
    uri_key = prefix + "uri:" + arg(args[3]).decode()
    member, token, vary = member_of(arg(args[0]), arg(args[1])), arg(args[10]), arg(args[11])
    if token and (hash_of(db, uri_key) or {}).get(member) != token:
        # No longer listed under its token: a purge since the lookup; refused, the lock given back.
        _release(db, lock_key, token)
        return [0, 0, 0]
    fresh_ms, swr_ms, grace_ms, max_entries = int(args[4]), int(args[5]), int(args[6]), int(args[9])
    now_us = db.now_us()
    now = now_us // 1000  # what now_ms(db) gives; the LRU score takes the microseconds
    fresh = now + fresh_ms
    swr = fresh + swr_ms
    stale = fresh + max(grace_ms, swr_ms)
    kept = max(stale, fresh + int(args[12]))
    keep = kept - now

    # Every write replaces the four fields (no DEL first), then the entry's deadline.
    writable(db, entry).update({b"t": b"%d %d %d %d" % (fresh, swr, stale, now), b"h": arg(args[7]), b"b": arg(args[8]),
                                b"u": arg(args[3])})
    db.pexpire(entry, keep)
    for key, score in ((lru_key, lru_score(writable(db, stats_key), now_us)), (exp_key, kept), (paths_key, 0)):
        writable(db, key)[member] = score
    size = len(arg(args[7])) + len(arg(args[8]))
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
            if not db.exists(entry_key(entry_prefix.encode(), listed)):
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
        victim_key = entry_key(entry_prefix.encode(), victim)
        unlist(db, prefix, victim_key, victim)
        db.delete(victim_key)
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
