"""Twin of lua/cache_get.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._cache_common import bucket_prefix, lru_score, member_of
from app.store.scripts._redis import arg, hash_of, writable, zset_of


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[Any]:
    # Arguments are turned into bytes where they are used: a hit reads two of them.
    stats_key = keys[0]
    prefix = bucket_prefix(stats_key)
    entry_id = arg(args[4]).decode()
    mode = arg(args[0])
    now_us = db.now_us()
    now = now_us // 1000  # what now_ms(db) gives; the LRU score takes the microseconds
    entry = hash_of(db, prefix + "e2:" + entry_id) or {}
    meta = entry.get(b"t")
    fresh = swr = stored = 0
    if meta is not None:
        parts = meta.split(b" ")
        fresh, swr, stored = int(parts[0]), int(parts[1]), int(parts[3])

    if mode == b"2":
        if meta is not None and (fresh - now) * 1000 > (fresh - stored) * int(arg(args[7])):
            return [5, 0, now, meta]
        return [6, _lock(db, prefix, entry_id, args), now, meta]

    if meta is not None and now < swr:  # fresh (a hit) or within stale-while-revalidate
        stats = writable(db, stats_key)
        score = lru_score(stats, now_us)
        lru = zset_of(db, prefix + "lru")
        member = member_of(arg(args[3]), arg(args[4]))
        if lru is not None and member in lru:
            lru[member] = score
        stats[b"hits"] = b"%d" % (int(stats.get(b"hits", b"0")) + 1)
        if now < fresh:
            return [1, 0, now, meta, entry.get(b"h"), entry.get(b"b")]
        got = _lock(db, prefix, entry_id, args) if mode == b"0" else 0
        return [4, got, now, meta, entry.get(b"h"), entry.get(b"b")]

    if meta is None:
        base_id = arg(args[5]).decode() or entry_id
        vary = db.get(prefix + "vary:" + base_id) or b""
        if vary != arg(args[6]):
            return [3, 0, now, vary]

    state = 0
    if mode == b"0" and not db.exists(prefix + "pass:" + entry_id):
        state = _lock(db, prefix, entry_id, args)
        if state == 0:
            lock_key = prefix + "lock:" + entry_id
            held = db.get(lock_key)
            if isinstance(held, bytes) and not held.endswith(b"!"):
                left = db.pttl(lock_key)
                db.set(lock_key, held + b"!", left if left >= 0 else None)
            return [2, 0, now, meta, entry.get(b"h"), entry.get(b"b")]
    _count(db, stats_key, b"misses")
    return [0, state, now, meta, entry.get(b"h"), entry.get(b"b")]


def _lock(db: MemoryDB, prefix: str, entry_id: str, args: list[Any]) -> int:
    """The lock taken, the fill is listed under its URI: member -> token (PEXPIRE NX on the uri key)."""
    lock_key = prefix + "lock:" + entry_id
    if db.exists(lock_key):
        return 0
    uri_key = prefix + "uri:" + arg(args[9]).decode()
    token = arg(args[1])
    db.set(lock_key, token, int(args[2]))
    writable(db, uri_key)[member_of(arg(args[3]), arg(args[4]))] = token
    if db.pttl(uri_key) == -1:
        db.pexpire(uri_key, int(args[8]))
    return 1


def _count(db: MemoryDB, stats_key: str, field: bytes) -> None:
    stats = writable(db, stats_key)
    stats[field] = b"%d" % (int(stats.get(field, b"0")) + 1)
