"""The fleet's store: Redis, scripts called by SHA.

The request path's script calls go through one multiplexed connection (app/store/pipe.py); script
loading, plain commands and pub/sub, off that path, through redis-py asyncio.

Failure handling is the point of this module. A refused or timed-out connection becomes
``StoreUnavailable``, and for ``retry_after_failure`` seconds after it every call fails at once
without touching the network, so requests never queue behind a dead Redis; the first call after the
pause probes it again. A call whose connection broke after it was sent is not sent again (it may
have run: a rate limit would be charged twice). A Redis that restarted has forgotten the scripts:
NOSCRIPT reloads them all and the calls that got it are sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.store.base import ScriptCall, Store, StoreError, StoreUnavailable
from app.store.pipe import PipeBroken, PipeUnavailable, RedisPipe, ReplyError, bulk, encode
from app.store.script_sources import script_sources

log = logging.getLogger("apigw.store")

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, asyncio.TimeoutError)
# Errors worth one immediate second try: a pooled connection that died while Redis restarted fails
# once, and redis-py drops it, so the retry gets a fresh one (and a Redis that is really gone refuses
# it at once). Timeouts are not retried: that would double the wait.
_STALE = (RedisConnectionError, ConnectionError)


async def _once_more_if_stale(command: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await command()
    except _STALE:
        return await command()


class RedisStore(Store):
    shared = True

    def __init__(self, url: str, prefix: str = "apigw", *, max_connections: int = 64,
                 socket_timeout: float = 1.0, connect_timeout: float = 0.5,
                 retry_after_failure: float = 0.5, scripts_dir: Path | None = None) -> None:
        super().__init__(prefix)
        self.url = url
        self.retry_after_failure = retry_after_failure
        # The gateway's scripts (every one, or ScriptsMissing); a test may bring a folder of its own.
        self._sources = script_sources() if scripts_dir is None else {
            p.stem: p.read_text() for p in sorted(scripts_dir.glob("*.lua"))}
        self._shas = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in self._sources.items()}
        # "EVALSHA <sha>" of each script, encoded once.
        self._heads = {name: bulk("EVALSHA") + bulk(sha) for name, sha in self._shas.items()}
        self.pipe = RedisPipe(url, connect_timeout=connect_timeout, reply_timeout=socket_timeout)
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=socket_timeout,
            socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
            health_check_interval=30)
        self.redis = aioredis.Redis.from_pool(pool)
        self._down_until = 0.0
        self._logged_down_at = 0.0
        self._listener: asyncio.Task[None] | None = None
        self._closing = False
        self._pubsub_ready = asyncio.Event()
        self.failures = 0  # calls refused because the store was unreachable

    async def start(self) -> None:
        try:
            await self._load_scripts()
            await self.pipe.execute([("PING",)])  # the request path's connection, before the first request
        except (StoreUnavailable, PipeUnavailable, PipeBroken):
            log.warning("redis at %s is not reachable yet; serving degraded until it is", self.url)
        self._listener = asyncio.create_task(self._listen(), name="apigw-store-events")

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            # A cancel that lands inside redis-py's read timeout can be swallowed (the read just
            # times out); the listener then sees _closing at its next turn, at most ~1 s later.
            await asyncio.wait([self._listener], timeout=3)
        await self.pipe.close()
        await self.redis.aclose()

    # -- failure accounting ---------------------------------------------------------------------

    def _refuse_while_down(self) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            self.failures += 1
            raise StoreUnavailable("redis unreachable (pausing before the next attempt)")

    def _mark_down(self, error: BaseException) -> StoreUnavailable:
        now = time.monotonic()
        self._down_until = now + self.retry_after_failure
        self.failures += 1
        if now - self._logged_down_at > 10:  # at most one line per interval, not one per request
            self._logged_down_at = now
            log.warning("redis unreachable: %s; callers degrade until it answers", error)
        return StoreUnavailable(f"redis unreachable: {error}")

    def _mark_up(self) -> None:
        if self._down_until:
            self._down_until = 0.0
            log.info("redis reachable again")

    async def _guarded(self, command: Callable[[], Awaitable[Any]]) -> Any:
        self._refuse_while_down()
        try:
            result = await _once_more_if_stale(command)
        except _UNREACHABLE as error:
            raise self._mark_down(error) from None
        except RedisError as error:
            raise StoreError(str(error)) from error
        self._mark_up()
        return result

    # -- scripts --------------------------------------------------------------------------------

    async def _load_scripts(self) -> None:
        async def load() -> None:
            for source in self._sources.values():
                await self.redis.script_load(source)
        await self._guarded(load)

    async def run(self, *calls: ScriptCall) -> list[Any]:
        self._refuse_while_down()
        commands = [self._evalsha(call) for call in calls]
        replies = await self._send(commands)
        again = [i for i, reply in enumerate(replies)
                 if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")]
        if again:  # a restarted or flushed Redis: those calls did not run
            await self._load_scripts()
            for i, reply in zip(again, await self._send([commands[i] for i in again]), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise StoreError(str(reply))
        self._mark_up()
        return replies

    def _evalsha(self, call: ScriptCall) -> bytes:
        head = self._heads.get(call.script)
        if head is None:
            raise StoreError(f"no script named {call.script!r}")
        wire = call.wire
        if wire is None or wire[0] is not head:  # not encoded yet, or by another store's scripts
            wire = (head, encode((len(call.keys), *call.keys, *call.args), head, 2))
            object.__setattr__(call, "wire", wire)  # a cache on a frozen value, not a change of it
        return wire[1]

    async def _send(self, commands: list[bytes]) -> list[Any]:
        self.round_trips += 1
        try:
            return await self.pipe.execute(commands)
        except PipeUnavailable as error:
            raise self._mark_down(error) from None
        except PipeBroken as error:
            if error.timed_out:  # a stalled Redis: pause rather than queue every request behind it
                raise self._mark_down(error) from None
            # Gone while the calls were in flight: they may have run, so they are not sent again;
            # the next call connects anew (and pauses only if that fails).
            raise StoreUnavailable(str(error)) from None

    # -- plain commands -------------------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            return bool(await self._guarded(lambda: self.redis.ping()))
        except StoreError:
            return False

    async def get(self, key: str) -> bytes | None:
        return await self._guarded(lambda: self.redis.get(key))

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._guarded(lambda: self.redis.set(key, value, px=None if ttl is None else int(ttl * 1000)))

    async def delete(self, *keys: str) -> int:
        return int(await self._guarded(lambda: self.redis.delete(*keys))) if keys else 0

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return await self._guarded(lambda: self.redis.hgetall(key))

    async def hset(self, key: str, mapping: Mapping[str, bytes | str | int | float]) -> None:
        await self._guarded(lambda: self.redis.hset(key, mapping=dict(mapping)))

    async def hdel(self, key: str, *fields: str) -> int:
        return int(await self._guarded(lambda: self.redis.hdel(key, *fields)))

    # -- events ---------------------------------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> None:
        await self._guarded(lambda: self.redis.publish(channel, message))

    def _on_subscribe(self, channel: str) -> None:
        # The listener subscribes to every known channel each time it (re)connects.
        self._pubsub_ready.set()

    async def _listen(self) -> None:
        """Deliver messages to handlers; after any break, resubscribe and tell the reconnect handlers."""
        delay = 0.05
        first = True
        while not self._closing:
            await self._pubsub_ready.wait()
            pubsub = self.redis.pubsub()
            try:
                channels = list(self._handlers)
                await pubsub.subscribe(*channels)
                delay = 0.05
                if not first:
                    log.info("event stream reconnected; re-reading shared state")
                    for handler in self._reconnect_handlers:
                        await handler()
                first = False
                while not self._closing:
                    if set(self._handlers) != set(channels):
                        new = [c for c in self._handlers if c not in channels]
                        await pubsub.subscribe(*new)
                        channels.extend(new)
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message["type"] == "message":
                        channel = message["channel"]
                        channel = channel.decode() if isinstance(channel, bytes) else channel
                        try:
                            self._dispatch(channel, message["data"])
                        except Exception:  # a handler's bug must not end the event stream
                            log.exception("event handler failed on %s", channel)
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except Exception as error:  # any break: wait, then resubscribe
                first = False
                log.debug("event stream broken: %s", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # the connection is already gone
                    pass
