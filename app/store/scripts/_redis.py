"""What every twin needs from Redis and from Lua: arguments and numbers as the script reads them,
and hashes and sorted sets on a ``MemoryDB`` as Redis keeps them.

A hash is ``dict[bytes, bytes]``; a sorted set is ``dict[bytes, float]`` (member -> score). As in
Redis, reading never creates a key, and a hash or sorted set left empty is removed.
"""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.pipe import arg_bytes


def arg(value: Any) -> bytes:
    """An argument as the script sees it: ``ARGV[i]``, encoded by the caller's client (the common
    types inline: this runs for most arguments of every call)."""
    kind = type(value)
    if kind is bytes:
        return value
    if kind is str:
        return value.encode()
    if kind is int:
        return b"%d" % value
    return arg_bytes(value)


def text(value: Any) -> str:
    return arg(value).decode()


def number(value: bytes | None) -> int | None:
    """``tonumber`` of a value that may be missing (nil). One that is there is read with ``int``:
    the scripts' numbers are integers, and ``int`` reads an argument however the caller passed it."""
    return None if value is None else int(value)


def ceil_ms(us: int) -> int:
    """``math.ceil(us / 1000)``."""
    return -(-us // 1000)


def now_ms(db: MemoryDB) -> int:
    """``TIME`` as the scripts turn it into milliseconds: seconds * 1000 + floor(micros / 1000)."""
    return db.now_us() // 1000


def hash_of(db: MemoryDB, key: str) -> dict[bytes, Any] | None:
    """The hash (or sorted set) at ``key``; None when there is none."""
    value = db.get(key)
    return value if isinstance(value, dict) else None


def zset_of(db: MemoryDB, key: str) -> dict[bytes, float] | None:
    return hash_of(db, key)


def writable(db: MemoryDB, key: str) -> dict[bytes, Any]:
    """The hash or sorted set at ``key`` to write to, created without expiry when missing (as HSET,
    ZADD, HINCRBY and ZINCRBY do)."""
    value = hash_of(db, key)
    if value is None:
        value = {}
        db.set(key, value)
    return value


def hset(db: MemoryDB, key: str, **fields: Any) -> None:
    """HSET with Lua's number formatting (integers as digits)."""
    h = writable(db, key)
    for name, value in fields.items():
        h[name.encode()] = value if isinstance(value, bytes) else str(value).encode()


def hdel(db: MemoryDB, key: str, *fields: bytes) -> None:
    h = hash_of(db, key)
    if h is not None:
        for field in fields:
            h.pop(field, None)
        if not h:
            db.delete(key)


def zrem(db: MemoryDB, key: str, member: bytes) -> None:
    hdel(db, key, member)


def zrangebylex(db: MemoryDB, key: str, lo: bytes | None, hi: bytes | None, hi_inclusive: bool = False) -> list[bytes]:
    """Members in [lo, hi) (or [lo, hi]); None is an open end, as '-' and '+' in Redis."""
    out = []
    for member in sorted(zset_of(db, key) or {}):
        if lo is not None and member < lo:
            continue
        if hi is not None and (member > hi or (member == hi and not hi_inclusive)):
            continue
        out.append(member)
    return out
