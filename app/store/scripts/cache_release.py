"""Twin of lua/cache_release.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._cache_common import bucket_prefix, member_of
from app.store.scripts._redis import arg, hash_of, hdel


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> int:
    prefix = bucket_prefix(keys[0])
    entry_id = arg(args[3]).decode()
    lock_key, pass_key, entry_key = prefix + "lock:" + entry_id, prefix + "pass:" + entry_id, prefix + "e2:" + entry_id
    uri_key = prefix + "uri:" + arg(args[5]).decode()
    token, pass_ms, member = arg(args[0]), int(args[1]), member_of(arg(args[4]), arg(args[3]))
    listed = hash_of(db, uri_key)
    if listed is not None and listed.get(member) == token:
        if db.exists(entry_key):
            listed[member] = b"1"
        else:
            hdel(db, uri_key, member)
    held = db.get(lock_key)
    if held not in (token, token + b"!"):
        return 0
    db.delete(lock_key)
    if pass_ms > 0:
        db.set(pass_key, b"1", pass_ms)
    return 1
