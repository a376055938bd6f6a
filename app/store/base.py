"""The state store: what every replica shares.

Shared state changes only through named scripts (``lua/<name>.lua``), so that each change is atomic
in Redis. The memory store runs a Python twin of each script (``app/store/scripts/<name>.py``) with
the same replies and the same resulting keys; tests/integration/test_script_twins.py holds each pair
to that on a real Redis, and the contract suite runs the components on both stores.

``run`` takes several script calls and answers them in one round trip, which is how the request
pipeline keeps to its budget (rate limit + cache lookup together, then outcome + cache store together).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.store.memory_limits import MemoryLimit

MessageHandler = Callable[[bytes], None]
ReconnectHandler = Callable[[], Awaitable[None]]


class StoreError(Exception):
    """The store answered, but with an error (a script bug, a wrong type)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now. Callers degrade by their own policy; it is never a 500."""


@dataclass(slots=True)
class ScriptCall:
    """One script call: never changed once made (only ``wire``, a cache, is set later). Not frozen:
    a frozen dataclass sets each field through ``object.__setattr__``, and the request path makes
    two or three of these per request."""

    script: str
    keys: Sequence[str]
    args: Sequence[Any] = ()
    # A Redis store's encoding of this call (with the script head it was made with), kept on it:
    # a call object made once and sent on every request (a client's rate-limit plan) is encoded once.
    wire: tuple[bytes, bytes] | None = field(default=None, compare=False, repr=False)
    # The Redis Cluster slot of the call's hash tag when its maker knows it (the cache's buckets
    # have a fixed set of tags, their slots computed once): the cluster store then routes the call
    # without hashing its first key.
    slot: int | None = field(default=None, compare=False, repr=False)


class Store(abc.ABC):
    """One interface, two back ends: ``MemoryStore`` (one process) and ``RedisStore`` (the fleet)."""

    def __init__(self, prefix: str = "apigw") -> None:
        self.prefix = prefix
        self._handlers: dict[str, list[MessageHandler]] = {}
        self._reconnect_handlers: list[ReconnectHandler] = []
        # Batches ``run`` sent (each one round trip, whatever it held): the request path's budget,
        # exported as apigw_store_round_trips_total.
        self.round_trips = 0

    @property
    @abc.abstractmethod
    def shared(self) -> bool:
        """True when other replicas see the same state."""

    def key(self, kind: str, tag: str, *rest: str) -> str:
        """``apigw:<kind>:{<tag>}:<rest>``: keys that one script touches share ``tag``, hence one
        Redis Cluster slot."""
        base = f"{self.prefix}:{kind}:{{{tag}}}"
        return f"{base}:{':'.join(rest)}" if rest else base

    def channel(self, name: str) -> str:
        return f"{self.prefix}:events:{name}"

    async def start(self) -> None:
        """Open connections. A store that cannot be reached yet still starts: it recovers by itself."""

    async def close(self) -> None:
        """Release connections and background tasks."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """Whether the store answers now."""

    @abc.abstractmethod
    async def run(self, *calls: ScriptCall) -> list[Any]:
        """Run the scripts in order, in one round trip; their replies in the same order."""

    async def run_each(self, *calls: ScriptCall) -> list[Any]:
        """Like ``run``, but a call that failed has its ``StoreError`` as its reply instead of
        failing the others: on a Redis Cluster, a lost shard fails only the calls of its slots."""
        try:
            return await self.run(*calls)
        except StoreError as error:
            return [error] * len(calls)

    async def ready(self) -> bool:
        """Whether the request path can be served now (readiness): by default, whether the store answers."""
        return await self.ping()

    async def memory_limits(self) -> list[MemoryLimit] | None:
        """Each master's maxmemory and policy (app/store/memory_limits.py); None when the server
        refuses to tell (CONFIG disabled or renamed). A store without a Redis has none."""
        return []

    async def call(self, script: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        return (await self.run(ScriptCall(script, keys, args)))[0]

    # Plain reads and writes, for the control plane (never on the request path).
    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    @abc.abstractmethod
    async def delete(self, *keys: str) -> int: ...

    @abc.abstractmethod
    async def hgetall(self, key: str) -> dict[bytes, bytes]: ...

    @abc.abstractmethod
    async def hset(self, key: str, mapping: Mapping[str, bytes | str | int | float]) -> None: ...

    @abc.abstractmethod
    async def hdel(self, key: str, *fields: str) -> int: ...

    # A capped stream (the admin API's audit log): ids are the store's time in ms and a sequence.
    @abc.abstractmethod
    async def xadd(self, key: str, fields: Mapping[str, bytes | str], maxlen: int) -> bytes:
        """Append an entry and keep only the newest ``maxlen`` (an exact cap: XADD MAXLEN =); its id."""

    @abc.abstractmethod
    async def xrevrange(self, key: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The newest ``count`` entries, newest first, each as (id, fields)."""

    # Events: a replica's change reaches the others through these.
    @abc.abstractmethod
    async def publish(self, channel: str, message: bytes) -> None: ...

    def subscribe(self, channel: str, handler: MessageHandler) -> None:
        """Call ``handler`` with every message on ``channel``, from any replica (this one included)."""
        self._handlers.setdefault(channel, []).append(handler)
        self._on_subscribe(channel)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        """Call ``handler`` after the event stream was broken and is back: messages may have been
        missed, so the caller re-reads what it caches."""
        self._reconnect_handlers.append(handler)

    def unsubscribe(self, channel: str, handler: MessageHandler) -> None:
        """Stop calling ``handler`` for ``channel`` (a component closed while the process goes on:
        a reloaded config's replaced parts). The channel itself stays listened to."""
        # New lists, not removals in place: a dispatch may be walking the old one.
        if channel in self._handlers:
            self._handlers[channel] = [h for h in self._handlers[channel] if h != handler]

    def forget_reconnect(self, handler: ReconnectHandler) -> None:
        self._reconnect_handlers = [h for h in self._reconnect_handlers if h != handler]

    def _on_subscribe(self, channel: str) -> None:
        """Back ends that listen on a connection start listening to ``channel`` here."""

    async def listening(self, timeout: float = 2.0) -> bool:
        """Wait, at most ``timeout`` s, until every channel subscribed to so far is listened to, so
        that a replica that says it has started misses no change another replica makes next."""
        return True

    def _dispatch(self, channel: str, message: bytes) -> None:
        for handler in self._handlers.get(channel, ()):
            handler(message)
