"""Twin of ``lua/ratelimit.lua``: every limit of a request checked and charged at once.

Same arguments, same integer arithmetic, same replies; the state is kept as Redis keeps it
(a hash of bytes for a window, a bytes TAT for a bucket) so that the two stores agree to the
microsecond (the hypothesis test replays arrival times on both).
"""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._redis import ceil_ms, hdel, number, writable


def _ms(us: int) -> int:
    """The script's ms(): whole milliseconds rounded up, never negative."""
    return 0 if us <= 0 else ceil_ms(us)


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[int]:
    cost = int(args[0])
    now = int(args[1]) if len(args) > 1 and args[1] not in ("", b"") else db.now_us()

    plans: list[dict[str, Any]] = []
    allowed = True
    refused_at, retry = 0, 0
    best, best_remaining = 0, None

    for i, key in enumerate(keys, start=1):
        a = 2 + (i - 1) * 4
        kind = args[a]
        kind = kind.decode() if isinstance(kind, bytes) else kind
        limit, width, buckets = int(args[a + 1]), int(args[a + 2]), int(args[a + 3])
        p: dict[str, Any] = {"kind": kind, "key": key}
        wait = 0
        if kind == "w":
            ring = buckets + 1
            state = db.get(key)
            fields: dict[bytes, bytes] = state if isinstance(state, dict) else {}
            last = number(fields.get(b"c"))
            n = number(fields.get(b"n")) or 0
            c = now // width
            if last is None:
                n = 0
                p["moved"] = True
            elif c < last:
                c = last  # the clock went back: count into the newest bucket
            elif c > last:
                p["moved"] = True
                if last < c - buckets:
                    p["clear"] = True
                    n = 0
                else:
                    gone = [str(b % ring).encode() for b in range(last - buckets, c - buckets)]
                    n -= sum(number(fields.get(slot)) or 0 for slot in gone)
                    p["gone"] = gone
            p.update(c=c, n=n, slot=str(c % ring).encode(), ttl=_ms((c + ring) * width - now) + 1)
            ok = n + cost <= limit
            if ok:
                remaining = limit - n - cost
                if cost > 0:
                    reset = (c + ring) * width - now
                elif n > 0:
                    assert last is not None
                    reset = (last + ring) * width - now
                else:
                    reset = 0
            else:
                assert last is not None
                remaining = 0
                reset = (last + ring) * width - now
                excess, freed = n + cost - limit, 0
                wait = reset
                for j, b in enumerate(range(c - buckets, last + 1)):
                    freed += number(fields.get(str(b % ring).encode())) or 0
                    if freed >= excess:
                        wait = (c - buckets + j + ring) * width - now
                        break
            p["used"] = n
        else:
            interval = width
            stored = db.get(key)
            tat = int(stored) if stored is not None else now
            tat = max(tat, now)
            new_tat = tat + interval * cost
            allow_at = new_tat - limit * interval
            ok = allow_at <= now
            if ok:
                remaining = (now - allow_at) // interval
                reset = new_tat - now
                p.update(tat=new_tat, ttl=_ms(new_tat - now) + 1)
            else:
                remaining = 0
                reset = tat - now
                wait = allow_at - now
            p["used"] = limit - (now - (tat - limit * interval)) // interval
        if not ok:
            allowed = False
            if refused_at == 0 or wait > retry:
                refused_at, retry = i, wait
        if best_remaining is None or remaining < best_remaining:
            best, best_remaining = i, remaining
        p.update(limit=limit, remaining=remaining, reset=reset)
        plans.append(p)

    if allowed and cost > 0:
        for p in plans:
            if p["kind"] == "w":
                if p.get("clear"):
                    db.delete(p["key"])
                elif p.get("gone"):
                    hdel(db, p["key"], *p["gone"])
                fields = writable(db, p["key"])
                fields[p["slot"]] = str((number(fields.get(p["slot"])) or 0) + cost).encode()
                fields[b"c"] = str(p["c"]).encode()
                fields[b"n"] = str(p["n"] + cost).encode()
                if p.get("moved"):
                    # The key lives until the bucket of its last charge has left: set once per bucket.
                    db.pexpire(p["key"], p["ttl"])
            else:
                db.set(p["key"], str(p["tat"]).encode(), p["ttl"])

    shown = refused_at or best
    reply = [1 if allowed else 0, _ms(retry), 0, 0, 0, refused_at]
    if shown:
        chosen = plans[shown - 1]
        reply[2:5] = [chosen["limit"], chosen["remaining"], _ms(chosen["reset"])]
    if cost == 0:
        reply.extend(p["used"] for p in plans)
    return reply
