"""Twin of lua/cache_invalidate.lua (the glob rules are the script's, rebuilt as a regex)."""

from __future__ import annotations

import re
from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._cache_common import bucket_prefix, forget, unlist
from app.store.scripts._redis import arg, zrangebylex


def glob_regex(glob: bytes) -> re.Pattern[bytes]:
    """The script's translation, byte for byte as Lua matches: ``*`` any run (``/`` included),
    ``?`` one byte, ``[abc]``/``[a-z]``/``[!abc]`` a class; everything else literal."""
    out, i, n = [b"^"], 0, len(glob)
    while i < n:
        c = glob[i:i + 1]
        close = glob.find(b"]", i + 2) if c == b"[" else -1
        if c == b"*":
            out.append(b".*")
        elif c == b"?":
            out.append(b".")
        elif c == b"[" and close != -1:
            body = glob[i + 1:close]
            negate = body.startswith(b"!")
            if negate:
                body = body[1:]
            out.append(b"[" + (b"^" if negate else b"") + body.replace(b"\\", b"\\\\") + b"]")
            i = close
        else:
            out.append(re.escape(c))
        i += 1
    out.append(b"$")
    return re.compile(b"".join(out), re.DOTALL)


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> int:
    lru_key, exp_key, paths_key, sizes_key, stats_key = keys
    mode, head, glob, entry_prefix = (arg(a) for a in args)
    pattern = None
    if mode == b"prefix":
        if not head:
            members = zrangebylex(db, paths_key, None, None)
        else:
            members = (zrangebylex(db, paths_key, head + b"\0", head + b"\1")
                       + zrangebylex(db, paths_key, head + b"/", head + b"0"))
    else:
        pattern = glob_regex(glob)
        members = zrangebylex(db, paths_key, head or None, head + b"\xff" if head else None)
    removed = 0
    for member in members:
        path, _, victim = member.partition(b"\0")
        if pattern is None or pattern.match(path):
            forget(db, (paths_key, lru_key, exp_key), member, sizes_key, stats_key)
            key = entry_prefix.decode() + victim.decode()
            unlist(db, bucket_prefix(stats_key), key, member)
            db.delete(key)
            removed += 1
    return removed
