"""What the twins of lua/activity_*.lua share: the window rotation."""

from __future__ import annotations

from app.store.memory import MemoryDB
from app.store.scripts._cache_common import b, hash_of


def current_epoch(db: MemoryDB, window: int) -> int:
    return (db.now_us() // 1_000_000) // window


def seen_epoch(db: MemoryDB, meta_key: str) -> int:
    meta = hash_of(db, meta_key) or {}
    return int(meta.get(b"epoch", b"-1"))


def as_int(value: object) -> int:
    return int(b(value))
