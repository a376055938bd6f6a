"""Twin of lua/cache_purge.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._cache_common import entry_key, forget
from app.store.scripts._redis import arg, hash_of


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> int:
    index_keys = (keys[0], keys[1], keys[2])
    sizes_key, stats_key = keys[3], keys[4]
    entry_prefix, lock_prefix, channel = arg(args[0]), arg(args[1]), arg(args[2])
    removed = 0
    for uri_key in keys[5:]:
        for member, mark in list((hash_of(db, uri_key) or {}).items()):
            forget(db, index_keys, member, sizes_key, stats_key)
            removed += db.delete(entry_key(entry_prefix, member))
            if mark != b"1":  # a fill in progress: its lock freed, its waiters told
                lock_key = entry_key(lock_prefix, member)
                held = db.get(lock_key)
                if held == mark:
                    db.delete(lock_key)
                elif held == mark + b"!":
                    db.delete(lock_key)
                    _, cut, tail = member.partition(b"\0")
                    db.publish(channel.decode(), tail if cut else member)
        db.delete(uri_key)
    return removed
