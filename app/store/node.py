"""One Redis server on the request path: its multiplexed connection, the pause after it failed, and
the scripts it must know.

Failure rules (the store's, per server). A refused or timed-out connection becomes
``StoreUnavailable``, and for ``retry_after_failure`` seconds after it every call to this server
fails at once without touching the network, so requests never queue behind a dead Redis; the first
call after the pause probes it again. A call whose connection broke after it was sent is not sent
again (it may have run: a rate limit would be charged twice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from app.store.base import StoreError, StoreUnavailable
from app.store.pipe import PipeBroken, PipeUnavailable, RedisPipe, ReplyError, encode
from app.store.script_set import ScriptSet

log = logging.getLogger("apigw.store")

# The oldest Redis the scripts run on: the cache's lookup lists a fill with PEXPIRE ... NX (7.0).
# On an older one that script fails on every miss, and the cache would be bypassed without a word.
OLDEST_REDIS = (7, 0)
_INFO_SERVER = encode(("INFO", "server"))


def redis_version(info: bytes) -> tuple[int, ...] | None:
    """``redis_version`` from an INFO server reply, as numbers; None when it is not there."""
    for line in info.splitlines():
        if line.startswith(b"redis_version:"):
            try:
                return tuple(int(part) for part in line[len(b"redis_version:"):].strip().split(b".")[:3])
            except ValueError:
                return None
    return None


class NodeLink:
    def __init__(self, url: str, scripts: ScriptSet, *, connect_timeout: float = 0.5,
                 reply_timeout: float = 1.0, retry_after_failure: float = 0.5) -> None:
        self.url = url
        self.pipe = RedisPipe(url, connect_timeout=connect_timeout, reply_timeout=reply_timeout)
        self.address = self.pipe.path or f"{self.pipe.host}:{self.pipe.port}"
        self.scripts = scripts
        self.retry_after_failure = retry_after_failure
        self.down_until = 0.0
        self._logged_down_at = 0.0
        self.failures = 0  # calls refused because the server was unreachable
        self.round_trips = 0  # batches sent to this server
        self._version_ok = False  # the server's version was read, and is recent enough
        self._version_refused = False  # the refusal was logged

    # -- failure accounting ---------------------------------------------------------------------

    @property
    def down(self) -> bool:
        return bool(self.down_until) and time.monotonic() < self.down_until

    def refuse_while_down(self) -> None:
        if self.down_until and time.monotonic() < self.down_until:
            self.failures += 1
            raise StoreUnavailable(f"redis at {self.address} unreachable (pausing before the next attempt)")

    def mark_down(self, error: BaseException) -> StoreUnavailable:
        now = time.monotonic()
        self.down_until = now + self.retry_after_failure
        self.failures += 1
        if now - self._logged_down_at > 10:  # at most one line per interval, not one per request
            self._logged_down_at = now
            log.warning("redis at %s unreachable: %s; callers degrade until it answers", self.address, error)
        return StoreUnavailable(f"redis at {self.address} unreachable: {error}")

    def mark_up(self) -> None:
        if self.down_until:
            self.down_until = 0.0
            log.info("redis at %s reachable again", self.address)

    # -- sending --------------------------------------------------------------------------------

    async def send(self, commands: list[bytes]) -> list[Any]:
        """The replies in order (error replies as ``ReplyError`` values), or ``StoreUnavailable``."""
        self.round_trips += 1
        try:
            return await self.pipe.execute(commands)
        except PipeUnavailable as error:
            raise self.mark_down(error) from None
        except PipeBroken as error:
            raise self.broken(error) from None

    def submit(self, commands: list[bytes]) -> asyncio.Future[list[Any]] | None:
        """``send`` without a coroutine when the connection is open and the server is not paused:
        the batch leaves now, and the future gets its replies or ``PipeBroken`` (for ``broken``).
        None otherwise: then ``send`` it. A batch to several servers is written to each at once
        this way, and its caller wakes once per reply, with no task per server."""
        if self.down_until:
            return None
        future = self.pipe.submit(commands)
        if future is not None:
            self.round_trips += 1
        return future

    def broken(self, error: PipeBroken) -> StoreUnavailable:
        if error.timed_out:  # a stalled Redis: pause rather than queue every request behind it
            return self.mark_down(error)
        # Gone while the calls were in flight: they may have run, so they are not sent again;
        # the next call connects anew (and pauses only if that fails).
        return StoreUnavailable(str(error))

    async def check_version(self) -> None:
        """``StoreError`` when the server is older than ``OLDEST_REDIS``: readiness then stays false
        (with the reason logged once) rather than the cache failing on every miss. Read once per
        server; a server that will not say (INFO refused or renamed) is taken at its word."""
        if self._version_ok:
            return
        info = (await self.send([_INFO_SERVER]))[0]
        version = redis_version(info) if isinstance(info, bytes) else None
        if version is not None and version < OLDEST_REDIS:
            message = (f"redis at {self.address} is version {'.'.join(map(str, version))}: the gateway needs "
                       f"Redis {'.'.join(map(str, OLDEST_REDIS))} or newer")
            if not self._version_refused:
                self._version_refused = True
                log.error("%s; not ready until it is upgraded", message)
            raise StoreError(message)
        self._version_ok = True

    async def load_scripts(self) -> None:
        """Every script, so that the calls that got NOSCRIPT (a restart, a failover, a flush) can be
        sent again: they did not run."""
        for reply in await self.send(self.scripts.load_commands):
            if isinstance(reply, ReplyError):
                raise StoreError(f"redis at {self.address} refused a script: {reply}")

    async def has_scripts(self) -> bool:
        """Whether this server knows every script now; the missing ones are loaded on the way.
        ``StoreError`` naming the version when the server is older than the scripts need."""
        if not self.scripts.shas:
            return False  # no scripts were found: the request path cannot be served at all
        await self.check_version()
        reply = (await self.send([self.scripts.exists_command]))[0]
        if isinstance(reply, ReplyError):
            raise StoreError(str(reply))
        if not all(reply):
            await self.load_scripts()  # raises unless every script is known afterwards
        return True

    async def close(self) -> None:
        await self.pipe.close()
