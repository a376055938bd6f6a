"""The embedded default: one process's state in a dict, with Redis's expiry semantics.

Each script of ``lua/`` has a Python twin in ``app/store/scripts/<name>.py`` exposing
``run(db, keys, args)``; it returns what the Lua returns, as redis-py would decode it (bytes for
strings, ints, lists), so the components cannot tell the stores apart.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from app.store.base import ScriptCall, Store, StoreError
from app.store.script_sources import SCRIPT_NAMES


class MemoryDB:
    """Keys to Python values (bytes, dict, list, ...) with millisecond expiry, as Redis keeps them."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._values: dict[str, Any] = {}
        self._expires_at: dict[str, float] = {}
        # Messages a script published (PUBLISH inside Lua); the store delivers them after the call.
        self.published: list[tuple[str, bytes]] = []

    def now_us(self) -> int:
        """What Redis TIME gives a script: microseconds since the epoch."""
        return int(self.clock() * 1_000_000)

    def _alive(self, key: str) -> bool:
        deadline = self._expires_at.get(key)
        if deadline is not None and deadline <= self.clock():
            self._values.pop(key, None)
            self._expires_at.pop(key, None)
        return key in self._values

    def get(self, key: str, default: Any = None) -> Any:
        return self._values[key] if self._alive(key) else default

    def set(self, key: str, value: Any, ttl_ms: float | None = None) -> None:
        self._values[key] = value
        if ttl_ms is None:
            self._expires_at.pop(key, None)
        else:
            self._expires_at[key] = self.clock() + ttl_ms / 1000

    def delete(self, *keys: str) -> int:
        removed = 0
        for key in keys:
            if self._alive(key):
                removed += 1
            self._values.pop(key, None)
            self._expires_at.pop(key, None)
        return removed

    def exists(self, key: str) -> bool:
        return self._alive(key)

    def pexpire(self, key: str, ttl_ms: float) -> bool:
        if not self._alive(key):
            return False
        self._expires_at[key] = self.clock() + ttl_ms / 1000
        return True

    def pttl(self, key: str) -> int:
        """As Redis PTTL: -2 no key, -1 no expiry, else milliseconds left."""
        if not self._alive(key):
            return -2
        deadline = self._expires_at.get(key)
        return -1 if deadline is None else max(0, int((deadline - self.clock()) * 1000))

    def keys(self) -> list[str]:
        return [key for key in list(self._values) if self._alive(key)]

    def publish(self, channel: str, message: bytes | str | int) -> int:
        """As PUBLISH inside a script: delivered once the script is done."""
        self.published.append((channel, _as_bytes(message)))
        return 0


def _load_twins() -> dict[str, ModuleType]:
    twins = {}
    for name in sorted(SCRIPT_NAMES):
        twins[name] = importlib.import_module(f"app.store.scripts.{name}")
    return twins


class MemoryStore(Store):
    shared = False

    def __init__(self, prefix: str = "apigw", clock: Callable[[], float] = time.time) -> None:
        super().__init__(prefix)
        self.db = MemoryDB(clock)
        self._twins = _load_twins()

    async def ping(self) -> bool:
        return True

    async def run(self, *calls: ScriptCall) -> list[Any]:
        # No await between the calls: like a Redis script, each runs with nothing interleaved.
        self.round_trips += 1
        replies = []
        for call in calls:
            twin = self._twins.get(call.script)
            if twin is None:
                raise StoreError(f"no script named {call.script!r}")
            replies.append(twin.run(self.db, list(call.keys), list(call.args)))
        if self.db.published:
            await self._deliver_published()
        return replies

    async def _deliver_published(self) -> None:
        sent, self.db.published = self.db.published, []
        for channel, message in sent:
            await self.publish(channel, message)

    async def get(self, key: str) -> bytes | None:
        value = self.db.get(key)
        return value if isinstance(value, bytes | None) else None

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.db.set(key, value, None if ttl is None else ttl * 1000)

    async def delete(self, *keys: str) -> int:
        return self.db.delete(*keys)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        value = self.db.get(key)
        return dict(value) if isinstance(value, dict) else {}

    async def hset(self, key: str, mapping: Mapping[str, bytes | str | int | float]) -> None:
        value = self.db.get(key)
        if not isinstance(value, dict):
            value = {}
            self.db.set(key, value)
        value.update({k.encode(): _as_bytes(v) for k, v in mapping.items()})

    async def hdel(self, key: str, *fields: str) -> int:
        value = self.db.get(key)
        if not isinstance(value, dict):
            return 0
        return sum(value.pop(f.encode(), None) is not None for f in fields)

    async def xadd(self, key: str, fields: Mapping[str, bytes | str], maxlen: int) -> bytes:
        stream = self.db.get(key)
        if not isinstance(stream, _Stream):
            stream = _Stream()
            self.db.set(key, stream)
        return stream.add(int(self.db.clock() * 1000), {k.encode(): _as_bytes(v) for k, v in fields.items()}, maxlen)

    async def xrevrange(self, key: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        stream = self.db.get(key)
        if not isinstance(stream, _Stream):
            return []
        return [(entry_id, dict(fields)) for entry_id, fields in reversed(stream.entries[-count:])] if count > 0 else []

    async def publish(self, channel: str, message: bytes) -> None:
        # Delivered on the next loop iteration, as a message from Redis would be.
        asyncio.get_running_loop().call_soon(self._dispatch, channel, message)


class _Stream:
    """A Redis stream's entries and ids: ``<ms>-<seq>``, always growing even when the clock does not."""

    def __init__(self) -> None:
        self.entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        self.last = (0, 0)

    def add(self, now_ms: int, fields: dict[bytes, bytes], maxlen: int) -> bytes:
        self.last = (now_ms, 0) if now_ms > self.last[0] else (self.last[0], self.last[1] + 1)
        entry_id = f"{self.last[0]}-{self.last[1]}".encode()
        self.entries.append((entry_id, fields))
        del self.entries[:max(0, len(self.entries) - maxlen)]
        return entry_id


def _as_bytes(value: bytes | str | int | float) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()

