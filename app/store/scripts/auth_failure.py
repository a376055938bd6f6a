"""Twin of lua/auth_failure.lua."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._redis import hash_of, hset, now_ms, number, text


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[int]:
    key = keys[0]
    threshold, window = int(args[0]), int(args[1])
    cooldown, max_cooldown, memory = int(args[2]), int(args[3]), int(args[4])
    now = now_ms(db)
    h = hash_of(db, key) or {}
    n, since = number(h.get(b"n")) or 0, number(h.get(b"since")) or 0
    strikes, last, cool_until = number(h.get(b"strikes")) or 0, number(h.get(b"last")) or 0, number(h.get(b"until")) or 0
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
        db.publish(text(args[5]), f"{text(args[6])} {left}")
    hset(db, key, n=n, since=since, strikes=strikes, last=last, until=cool_until)
    ttl = since + window - now
    if strikes > 0:
        ttl = max(ttl, last + memory - now)
    db.pexpire(key, max(ttl, cool_until - now, 1))
    return [cooling, left, n, strikes]
