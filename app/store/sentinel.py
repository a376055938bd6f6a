"""Redis Sentinel: the master is asked of the sentinels, and followed when they fail it over.

Two ways of learning of a failover, whichever comes first: the sentinels' ``+switch-master`` event
(one sentinel at a time is listened to; another when it goes away), and the request path's own
failures (an unreachable master, or ``READONLY`` from one that was turned into a replica), after
which the sentinels are asked again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from app.background import stop_tasks
from app.config import SentinelSection

log = logging.getLogger("apigw.store")

# The request path's failures ask the sentinels again at most this often.
REDISCOVER_EVERY = 0.1


def _address(entry: str) -> tuple[str, int]:
    rest = entry.partition("://")[2] if "://" in entry else entry
    host, _, port = rest.rpartition("@")[2].partition("/")[0].partition("?")[0].rpartition(":")
    return host, int(port)


class SentinelWatch:
    def __init__(self, spec: SentinelSection, on_master: Callable[[str], None], *, socket_timeout: float,
                 connect_timeout: float) -> None:
        """``on_master("host:port")`` is called with each master the sentinels name."""
        self.master_name = spec.master
        self.on_master = on_master
        self.address: str | None = None
        urls = [urlsplit(entry) for entry in spec.nodes if "://" in entry]
        self.tls = any(url.scheme == "rediss" for url in urls)
        self._query = next((url.query for url in urls if url.query), "")
        sentinel_auth = next((url for url in urls if url.password or url.username), None)
        common: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout}
        if self.tls:
            common["ssl"] = True
            # As the data nodes' URLs are read (app/store/pipe.py): a CA of one's own, or no check.
            tls_options = dict(parse_qsl(self._query))
            if tls_options.get("ssl_cert_reqs", "").lower() == "none":
                common["ssl_cert_reqs"] = "none"
            if "ssl_ca_certs" in tls_options:
                common["ssl_ca_certs"] = tls_options["ssl_ca_certs"]
        self.sentinel_kwargs = {**common}
        if sentinel_auth is not None:
            self.sentinel_kwargs.update(username=sentinel_auth.username or None, password=sentinel_auth.password)
        self.addresses = [_address(entry) for entry in spec.nodes]
        self.username = spec.username
        self.password = spec.password
        self.db = spec.db
        self.sentinel = Sentinel(self.addresses, sentinel_kwargs=self.sentinel_kwargs, username=spec.username,
                                 password=spec.password, db=spec.db, **common)
        self._watch: asyncio.Task[None] | None = None
        self._rediscover: asyncio.Task[None] | None = None
        self._asked_at = 0.0

    def data_url(self, address: str) -> str:
        """The URL of a data node (the master), with the data nodes' scheme and credentials."""
        userinfo = ""
        if self.password is not None:
            userinfo = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        query = f"?{self._query}" if self._query else ""
        return f"{'rediss' if self.tls else 'redis'}://{userinfo}{address}/{self.db}{query}"

    def control_client(self, max_connections: int) -> aioredis.Redis:
        """redis-py's client for the control plane: it asks the sentinels itself on every reconnect."""
        return self.sentinel.master_for(self.master_name, max_connections=max_connections)

    async def discover(self) -> str | None:
        """Ask every sentinel at once; the master of the newest configuration (the highest
        ``config-epoch``) wins. A sentinel that has not heard of a failover yet still names the old
        master, now a replica: believing the first answer would switch back to it."""
        answers = [a for a in await asyncio.gather(*(self._ask(s) for s in self.sentinel.sentinels)) if a]
        if not answers:
            log.warning("no sentinel names a master %r now", self.master_name)
            return None
        self._switch(max(answers)[1])
        return self.address

    async def _ask(self, sentinel: aioredis.Redis) -> tuple[int, str] | None:
        """(config epoch, "host:port") of the master this sentinel names, if it names a healthy one."""
        try:
            state = await sentinel.sentinel_master(self.master_name)
        except (RedisError, OSError) as error:
            log.debug("sentinel %s: %s", sentinel, error)
            return None
        if not state.get("is_master") or state.get("is_sdown") or state.get("is_odown"):
            return None
        return int(state.get("config-epoch", 0)), f"{state['ip']}:{state['port']}"

    def _switch(self, address: str) -> None:
        if address != self.address:
            if self.address is not None:
                log.warning("redis sentinel: master %r moved from %s to %s", self.master_name, self.address, address)
            self.address = address
            self.on_master(address)

    def suspect(self) -> None:
        """The master failed a call: ask the sentinels again (in the background, rate limited)."""
        if self._rediscover is not None and not self._rediscover.done():
            return
        now = time.monotonic()
        if now - self._asked_at < REDISCOVER_EVERY:
            return
        self._asked_at = now

        async def rediscover() -> None:
            await self.discover()
        self._rediscover = asyncio.get_running_loop().create_task(rediscover(), name="apigw-sentinel-rediscover")

    def start(self) -> None:
        self._watch = asyncio.get_running_loop().create_task(self._listen(), name="apigw-sentinel-watch")

    async def _listen(self) -> None:
        turn = 0
        while True:
            host, port = self.addresses[turn % len(self.addresses)]
            turn += 1
            client = aioredis.Redis(host=host, port=port, **self.sentinel_kwargs)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe("+switch-master")
                await self.discover()  # a switch while no sentinel was listened to is not missed
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message["type"] != "message":
                        continue
                    # "<master name> <old ip> <old port> <new ip> <new port>"
                    parts = message["data"].decode().split()
                    if len(parts) == 5 and parts[0] == self.master_name:
                        self._switch(f"{parts[3]}:{parts[4]}")
            except asyncio.CancelledError:
                raise
            except Exception as error:  # this sentinel went away: listen to the next one
                log.debug("sentinel %s:%s not listened to: %s", host, port, error)
                await asyncio.sleep(0.1)
            finally:
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:  # already gone
                    pass

    async def close(self) -> None:
        await stop_tasks([self._watch, self._rediscover])
