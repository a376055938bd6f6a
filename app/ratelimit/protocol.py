"""``lua/ratelimit.lua``, spelt out here once: its keys, arguments and reply.

Keys: one per limit, all under the client's hash tag (``client_tag``), so one script call runs on
one Redis Cluster slot: ``apigw:rl:{<client>}:<limit>`` for the client's own limits (``b`` the
burst bucket, ``s``/``m``/``h``/``d`` the windows) and ``apigw:rl:{<client>}:r:<route tag>:<limit>``
for a route's own (``route_tag``). A client that is a sub-account of an address (an X-Client-ID from
an untrusted peer, app/ratelimit/identity.py) keeps its keys under the address's tag,
``apigw:rl:{ip:<addr>}:c:<client>:<limit>`` (``sub_account_prefix``), so the one call that charges
both stays on one slot. A window is a HASH (its buckets), the burst bucket a STRING
(its theoretical arrival time).

ratelimit (``ratelimit_call``; reply ``Decision``, with cost 0 ``Usage``)
  KEYS  one per limit
  ARGV  cost (1 checks and charges; 0 only looks, writing nothing), now ("": Redis TIME; tests may
        pass microseconds to replay arrival times, the gateway never does), then four per limit in
        KEYS order (``Limit``): WINDOW, limit, bucket width (us), buckets: a rolling window of
        buckets * width; or BUCKET, capacity, microseconds per token, 0: a token bucket (GCRA)
  reply [allowed (1/0), retry_after_ms (until the same request would be admitted), limit, remaining,
        reset_ms (of the limit with the least left, or of the refusing one), the refusing limit's
        index (1-based, 0 none)]; with cost 0, then what each limit has used, in KEYS order
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from app.store import ScriptCall, Store

WINDOW, BUCKET = "w", "b"
_new = tuple.__new__  # builds the replies below from their fields without a Python-level __new__


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit as the script takes it: a window (WINDOW: limit, bucket width, buckets) or a
    token bucket (BUCKET: capacity, microseconds per token, 0). ``name`` ends its key."""

    name: str
    kind: str
    limit: int
    width_us: int
    buckets: int


def client_tag(client_id: str) -> str:
    """The client's hash tag in keys: the id itself when it is short and plain (readable in
    redis-cli), else a digest, so that a hostile X-Client-ID can't make huge keys or break the tag."""
    if 0 < len(client_id) <= 128 and client_id.isprintable() and "{" not in client_id \
            and "}" not in client_id and " " not in client_id:
        return client_id
    return "sha256:" + hashlib.sha256(client_id.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def route_tag(route_key: str) -> str:
    """A route's part of its keys: short, stable, free of spaces and braces."""
    return hashlib.sha1(route_key.encode()).hexdigest()[:12]


def client_prefix(store: Store, client_id: str) -> str:
    """What every key of the client starts with; a limit's key is this and its suffix."""
    return store.key("rl", client_tag(client_id))


def sub_account_prefix(store: Store, account: str, client_id: str) -> str:
    """What every key of ``client_id`` as a sub-account of ``account`` starts with: under the
    account's hash tag, so that its keys and the account's share a slot."""
    return client_prefix(store, account) + ":c:" + client_tag(client_id)


def own_suffix(name: str) -> str:
    """The key suffix of one of the client's own limits."""
    return ":" + name


def route_suffix(route_key: str, name: str) -> str:
    """The key suffix of one of a route's own limits, for the client."""
    return f":r:{route_tag(route_key)}:{name}"


def ratelimit_call(keys: tuple[str, ...], limits: Sequence[Limit], cost: int = 1,
                   now_us: int | None = None) -> ScriptCall:
    """``keys`` and ``limits`` in the same order; ``cost`` 0 only looks."""
    args: list[Any] = [cost, "" if now_us is None else now_us]
    for limit in limits:
        args += (limit.kind, limit.limit, limit.width_us, limit.buckets)
    return ScriptCall("ratelimit", keys, tuple(args))


class Decision(NamedTuple):
    """The script's reply to a call that charges (cost 1)."""

    allowed: int          # 1 admitted, 0 refused
    retry_after_ms: int
    limit: int
    remaining: int
    reset_ms: int
    refused_by: int       # the refusing limit's index, 1-based; 0 none


def decision_reply(raw: list[Any]) -> Decision:
    return _new(Decision, raw)


class Usage(NamedTuple):
    """The script's reply to a call that only looks (cost 0)."""

    decision: Decision
    used: tuple[int, ...]  # per limit, in the call's order


def usage_reply(raw: list[Any]) -> Usage:
    return Usage(_new(Decision, raw[:6]), tuple(int(x) for x in raw[6:]))


def every_key(store: Store, client_id: str, names: Iterable[str], route_keys: Iterable[str]) -> list[str]:
    """The keys the client's limits named ``names`` may have, its own and on each route."""
    prefix = client_prefix(store, client_id)
    names = tuple(names)
    keys = [prefix + own_suffix(name) for name in names]
    for route_key in route_keys:
        keys.extend(prefix + route_suffix(route_key, name) for name in names)
    return keys
