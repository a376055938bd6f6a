"""What the cache scripts' twins share: Redis-like hashes and sorted sets on a ``MemoryDB``.

Values are kept as Redis keeps them: a hash is ``dict[bytes, bytes]``, a sorted set is
``dict[bytes, float]`` (member -> score). Arguments arrive as the caller passed them (str, int or
bytes) and are turned into bytes the way redis-py encodes them.
"""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB


def b(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).encode()


def now_ms(db: MemoryDB) -> int:
    return db.now_us() // 1000


def hash_of(db: MemoryDB, key: str, create: bool = False) -> dict[bytes, bytes] | None:
    value = db.get(key)
    if isinstance(value, dict):
        return value
    if not create:
        return None
    value = {}
    db.set(key, value)
    return value


def zset_of(db: MemoryDB, key: str, create: bool = False) -> dict[bytes, float] | None:
    return hash_of(db, key, create)  # type: ignore[return-value]


def zrem(db: MemoryDB, key: str, member: bytes) -> None:
    z = zset_of(db, key)
    if z is not None:
        z.pop(member, None)
        if not z:
            db.delete(key)


def hdel(db: MemoryDB, key: str, field: bytes) -> None:
    h = hash_of(db, key)
    if h is not None:
        h.pop(field, None)
        if not h:
            db.delete(key)


def zrangebylex(db: MemoryDB, key: str, lo: bytes | None, hi: bytes | None, hi_inclusive: bool = False) -> list[bytes]:
    """Members in [lo, hi) (or [lo, hi]); None is an open end, as '-' and '+' in Redis."""
    z = zset_of(db, key) or {}
    out = []
    for member in sorted(z):
        if lo is not None and member < lo:
            continue
        if hi is not None and (member > hi or (member == hi and not hi_inclusive)):
            continue
        out.append(member)
    return out


def forget(db: MemoryDB, keys: dict[str, str], victim: bytes) -> None:
    """Drop an entry id from the lru, expiry, id->path and path indexes (keys by role)."""
    idx = hash_of(db, keys["idx"]) or {}
    path = idx.get(victim)
    if path is not None:
        zrem(db, keys["paths"], path + b"\0" + victim)
    hdel(db, keys["idx"], victim)
    zrem(db, keys["lru"], victim)
    zrem(db, keys["exp"], victim)


def purge_expired(db: MemoryDB, keys: dict[str, str], now: int, limit: int) -> int:
    exp = zset_of(db, keys["exp"]) or {}
    due = sorted((score, member) for member, score in exp.items() if score <= now)[:limit]
    for _, victim in due:
        forget(db, keys, victim)
    return len(due)
