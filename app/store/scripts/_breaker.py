"""What the breaker twins share with each other (the Lua scripts repeat it in each file)."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._redis import ceil_ms, hdel, hset

BUCKETS = 10
FIELDS = (b"state", b"gen", b"failures", b"successes", b"probes", b"open_until", b"probe_until")


def read(db: MemoryDB, key: str) -> dict[bytes, Any]:
    """The breaker's fields as the scripts' HMGET reads them: missing ones as their defaults."""
    h = db.get(key)
    h = h if isinstance(h, dict) else {}
    fields: dict[bytes, Any] = {name: int(h.get(name, b"0")) for name in FIELDS[1:]}
    fields[b"state"] = h.get(b"state", b"closed")
    return fields


def view(fields: dict[bytes, Any], now: int, flag: int, event: int) -> list[object]:
    state, open_until = fields[b"state"], fields[b"open_until"]
    left = ceil_ms(open_until - now) if state == b"open" and open_until > now else 0
    return [flag, state, fields[b"gen"], fields[b"failures"], left, event]


def clear_window(db: MemoryDB, key: str) -> None:
    hdel(db, key, *(f"w{i}".encode() for i in range(BUCKETS)))


def move(db: MemoryDB, key: str, fields: dict[bytes, Any], to: str, now: int, recovery_us: int = 0) -> None:
    """A transition: a new generation, counts back to 0, the rate window cleared."""
    open_until = now + recovery_us if to == "open" else 0
    if to == "open":
        h = db.get(key)
        opened = int(h.get(b"opened", b"0")) if isinstance(h, dict) else 0
        hset(db, key, opened=opened + 1)
    clear_window(db, key)
    fields.update({b"state": to.encode(), b"gen": fields[b"gen"] + 1, b"failures": 0, b"successes": 0,
                   b"probes": 0, b"open_until": open_until})
    hset(db, key, state=to, gen=fields[b"gen"], failures=0, successes=0, probes=0, open_until=open_until,
         changed_at=now)
