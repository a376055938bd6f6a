"""What the twins of lua/activity_*.lua share: the window rotation."""

from __future__ import annotations

from app.store.memory import MemoryDB
from app.store.scripts._redis import hash_of


def current_epoch(db: MemoryDB, window: int) -> int:
    return (db.now_us() // 1_000_000) // window


def seen_epoch(db: MemoryDB, meta_key: str) -> int:
    return int((hash_of(db, meta_key) or {}).get(b"epoch", b"-1"))
