"""What the breaker twins share with each other (the Lua scripts repeat it in each file)."""

from __future__ import annotations

from app.store.scripts._hash import ceil_ms, hset, num

BUCKETS = 10


def state_of(h: dict[bytes, bytes]) -> bytes:
    return h.get(b"state", b"closed")


def view(h: dict[bytes, bytes], now: int, flag: int, event: int) -> list[object]:
    state = state_of(h)
    open_until = num(h, "open_until")
    left = ceil_ms(open_until - now) if state == b"open" and open_until > now else 0
    return [flag, state, num(h, "gen"), num(h, "failures"), left, event]


def clear_window(h: dict[bytes, bytes]) -> None:
    for i in range(BUCKETS):
        h.pop(f"w{i}".encode(), None)


def move(h: dict[bytes, bytes], to: str, now: int, recovery_us: int = 0) -> None:
    open_until = now + recovery_us if to == "open" else 0
    if to == "open":
        hset(h, opened=num(h, "opened") + 1)
    clear_window(h)
    hset(h, state=to, gen=num(h, "gen") + 1, failures=0, successes=0, probes=0,
         open_until=open_until, changed_at=now)
