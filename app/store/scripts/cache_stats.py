"""Twin of lua/cache_stats.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._cache_common import purge_expired
from app.store.scripts._redis import hash_of, now_ms, zset_of


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[int]:
    stats_key, lru_key, exp_key, paths_key, sizes_key = keys
    purge_expired(db, (lru_key, exp_key, paths_key), now_ms(db), int(args[0]), sizes_key, stats_key)
    stats = hash_of(db, stats_key) or {}
    return [int(stats.get(b"hits", b"0")), int(stats.get(b"misses", b"0")),
            len(zset_of(db, lru_key) or {}), int(stats.get(b"evictions", b"0"))]
