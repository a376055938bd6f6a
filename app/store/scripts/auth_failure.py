"""Twin of lua/auth_failure.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._hash import hash_of, hset, num


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[int]:
    key = keys[0]
    threshold, window = int(args[0]), int(args[1])
    cooldown, max_cooldown, memory = int(args[2]), int(args[3]), int(args[4])
    now = db.now_us() // 1000
    h = hash_of(db, key)
    n, since = num(h, "n"), num(h, "since")
    strikes, last, cool_until = num(h, "strikes"), num(h, "last"), num(h, "until")
    if cool_until > now:
        return [1, cool_until - now, n, strikes]
    if strikes > 0 and now - last >= memory:
        strikes = 0
    if now - since >= window:
        n, since = 0, now
    n += 1
    cooling, left = 0, 0
    if n >= threshold:
        strikes += 1
        left = min(cooldown * 2 ** min(strikes - 1, 40), max_cooldown)
        cool_until, last, n, since, cooling = now + left, now, 0, now, 1
        db.publish(str(args[5]), f"{args[6]} {left}")
    hset(h, n=n, since=since, strikes=strikes, last=last, until=cool_until)
    ttl = since + window - now
    if strikes > 0:
        ttl = max(ttl, last + memory - now)
    db.pexpire(key, max(ttl, cool_until - now, 1))
    return [cooling, left, n, strikes]
