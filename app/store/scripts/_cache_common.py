"""What the cache scripts' twins share: Redis-like hashes and sorted sets on a ``MemoryDB``.

Values are kept as Redis keeps them: a hash is ``dict[bytes, bytes]``, a sorted set is
``dict[bytes, float]`` (member -> score). Arguments arrive as the caller passed them (str, int or
bytes) and are turned into bytes the way redis-py encodes them.
"""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB


def b(value: Any) -> bytes:
    kind = type(value)
    if kind is bytes:
        return value
    if kind is str:
        return value.encode()
    if kind is int:
        return b"%d" % value
    if isinstance(value, bytes):
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).encode()


def integer(value: Any) -> int:
    """A numeric argument, as the script's tonumber reads it."""
    return value if type(value) is int else int(b(value))


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


def entry_key(entry_prefix: bytes, member: bytes) -> str:
    """An index member is "<path>\0<id>" (one without a path, from an older build, is the id)."""
    return (entry_prefix + member.rpartition(b"\0")[2]).decode()


def forget(db: MemoryDB, index_keys: tuple[str, ...], member: bytes) -> None:
    """Drop an index member from the lru, expiry and path indexes, which share their members."""
    for key in index_keys:
        zrem(db, key, member)


def purge_expired(db: MemoryDB, index_keys: tuple[str, str, str], now: int, limit: int) -> int:
    """index_keys: lru, expiry, path."""
    exp = zset_of(db, index_keys[1])
    if not exp or min(exp.values()) > now:  # the usual case, without a loop over the index
        return 0
    due = sorted((score, member) for member, score in exp.items() if score <= now)[:limit]
    for _, victim in due:
        forget(db, index_keys, victim)
    return len(due)
