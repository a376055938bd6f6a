"""What the cache scripts' twins share: the entry keys and the three indexes (lru, expiry, path),
which share their members ("<path>\\0<id>", lua/cache_set.lua)."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._redis import hash_of, hdel, writable, zrem, zset_of


def bucket_prefix(stats_key: str) -> str:
    """The bucket's key prefix, "<bucket>:" of its stats key: the per-entry scripts (cache_get,
    cache_set, cache_release) name their other keys from it and the ids they are given."""
    return stats_key[:-len("stats")]


def member_of(path: bytes, entry_id: bytes) -> bytes:
    """The index member of an entry: "<path>\\0<id>", any NUL of the path left out."""
    return path.replace(b"\0", b"") + b"\0" + entry_id


def entry_key(entry_prefix: bytes, member: bytes) -> str:
    """An index member is "<path>\\0<id>" (one without a path, from an older build, is the id)."""
    _, cut, tail = member.partition(b"\0")
    return (entry_prefix + (tail if cut else member)).decode()


def unlist(db: MemoryDB, prefix: str, entry: str, member: bytes) -> None:
    """An entry deleted before its time leaves its URI's index (its "u" field names it), unless a
    fill in progress is listed there under the same member (lua/cache_set.lua's unlist)."""
    uri = (hash_of(db, entry) or {}).get(b"u")
    if uri is not None:
        uri_key = prefix + "uri:" + uri.decode()
        if (hash_of(db, uri_key) or {}).get(member) == b"1":
            hdel(db, uri_key, member)


def lru_score(stats: dict[bytes, Any], now_us: int) -> int:
    """The LRU's score for a read or a write (lua/cache_get.lua's lru_score): the time in
    microseconds, raised past the last score given, which the stats hash keeps as "clock"."""
    last = stats.get(b"clock")
    if last is not None and now_us <= int(last):
        now_us = int(last) + 1
    stats[b"clock"] = b"%d" % now_us
    return now_us


def add_bytes(db: MemoryDB, stats_key: str, delta: int) -> None:
    """HINCRBY stats bytes delta: the entries' sizes summed (lua/cache_set.lua)."""
    stats = writable(db, stats_key)
    stats[b"bytes"] = b"%d" % (int(stats.get(b"bytes", b"0")) + delta)


def forget_size(db: MemoryDB, sizes_key: str, stats_key: str, member: bytes) -> None:
    """The member's size leaves the sizes hash and the stats hash's sum."""
    size = (hash_of(db, sizes_key) or {}).get(member)
    if size is not None:
        hdel(db, sizes_key, member)
        add_bytes(db, stats_key, -int(size))


def forget(db: MemoryDB, index_keys: tuple[str, ...], member: bytes, sizes_key: str, stats_key: str) -> None:
    """Drop an index member from the lru, expiry and path indexes, and its size."""
    for key in index_keys:
        zrem(db, key, member)
    forget_size(db, sizes_key, stats_key, member)


def purge_expired(db: MemoryDB, index_keys: tuple[str, str, str], now: int, limit: int, sizes_key: str,
                  stats_key: str) -> int:
    """ZRANGEBYSCORE expiry -inf now LIMIT 0 limit, each one forgotten; index_keys: lru, expiry, path."""
    exp = zset_of(db, index_keys[1])
    if not exp or min(exp.values()) > now:  # the usual case, without a sort of the index
        return 0
    due = sorted((score, member) for member, score in exp.items() if score <= now)[:limit]
    for _, victim in due:
        forget(db, index_keys, victim, sizes_key, stats_key)
    return len(due)
