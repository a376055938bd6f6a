"""The fleet's store: Redis (one server, a Sentinel group or a Redis Cluster), scripts called by SHA.

The request path's script calls go through one multiplexed connection per server
(app/store/node.py, app/store/pipe.py); on a cluster, through one per master at once
(app/store/cluster.py). Script loading on those same connections; plain commands and pub/sub, off
that path, through redis-py asyncio (``Redis``, the Sentinel's master client, or ``RedisCluster``
with sharded pub/sub).

The failure rules are app/store/node.py's, per server. A Redis that restarted (or a promoted
replica) has forgotten the scripts: NOSCRIPT reloads them and the calls that got it are sent again.
A ``redis.url`` that names a Redis Cluster node is found out (``INFO cluster`` at start, or the first
``MOVED``) and used as the cluster's seed: a cluster is never mistaken for one server, whose
redirections would fail every call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.background import stop_tasks
from app.config import SentinelSection
from app.store.base import ScriptCall, Store, StoreError, StoreUnavailable
from app.store.cluster import ClusterRouting
from app.store.memory_limits import MemoryLimit
from app.store.node import NodeLink
from app.store.pipe import PipeBroken, RedisPipe, ReplyError, encode
from app.store.script_set import ScriptSet
from app.store.sentinel import SentinelWatch

log = logging.getLogger("apigw.store")

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, asyncio.TimeoutError)
# Errors worth one immediate second try: a pooled connection that died while Redis restarted fails
# once, and redis-py drops it, so the retry gets a fresh one (and a Redis that is really gone refuses
# it at once). Timeouts are not retried: that would double the wait.
_STALE = (RedisConnectionError, ConnectionError)
# Seconds the event listener waits for a message before it looks for channels subscribed since:
# a new channel is listened to within this.
LISTEN_TURN = 0.1
_INFO_CLUSTER = encode(("INFO", "cluster"))
_CONFIG_MAXMEMORY = encode(("CONFIG", "GET", "maxmemory"))
_CONFIG_POLICY = encode(("CONFIG", "GET", "maxmemory-policy"))


async def _once_more_if_stale(command: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await command()
    except _STALE:
        return await command()


async def _close_quietly(client: aioredis.Redis) -> None:
    try:
        await client.aclose()
    except Exception:  # its connections are already gone
        pass


def _node_url(entry: str, template: str | None) -> str:
    """A node entry (``host:port`` or a URL) as a URL, with the scheme and credentials of
    ``template`` (the first entry given as a URL) when it has none of its own."""
    if "://" in entry:
        return entry
    if template is None:
        return f"redis://{entry}"
    parts = urlsplit(template)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit((parts.scheme, f"{userinfo}@{entry}" if userinfo else entry, "", parts.query, ""))


class RedisStore(Store):
    shared = True

    def __init__(self, url: str | None = None, prefix: str = "apigw", *,
                 cluster_nodes: Sequence[str] | None = None, sentinel: SentinelSection | None = None,
                 max_connections: int = 64, socket_timeout: float = 1.0, connect_timeout: float = 0.5,
                 retry_after_failure: float = 0.5, scripts_dir: Path | None = None) -> None:
        super().__init__(prefix)
        if not (url or cluster_nodes or sentinel):
            raise ValueError("RedisStore needs a url, cluster_nodes or a sentinel section")
        # The gateway's scripts (every one, or ScriptsMissing); a test may bring a folder of its own.
        self.scripts = ScriptSet(scripts_dir)
        self.retry_after_failure = retry_after_failure
        self.max_connections = max_connections
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        # The URL new nodes get their scheme and credentials from (a discovered cluster node, a master).
        self._template: str | None = None
        self.node: NodeLink | None = None  # one server (or a Sentinel group's master)
        self.cluster: ClusterRouting | None = None
        self.sentinel: SentinelWatch | None = None
        self.redis: Any
        if cluster_nodes:
            self._use_cluster([_node_url(e, self._template_of(cluster_nodes)) for e in cluster_nodes])
        elif sentinel is not None:
            self.sentinel = SentinelWatch(sentinel, self._follow_master, socket_timeout=socket_timeout,
                                          connect_timeout=connect_timeout)
            self.url = ",".join(sentinel.nodes)
            self.redis = self.sentinel.control_client(max_connections)
        else:
            assert url is not None
            self.url = url
            self._template = url
            self.node = self._link(url)
            self.redis = self._control_client(url)
        self._listener: asyncio.Task[None] | None = None
        self._closing = False
        self._pubsub_ready = asyncio.Event()
        self._listened: set[str] = set()  # the channels the event stream is subscribed to now
        # On a cluster, the master the event stream is subscribed on now (None while it is not).
        self.event_node: str | None = None

    def _control_client(self, url: str) -> aioredis.Redis:
        """redis-py's client for plain commands and pub/sub on one server."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=self.max_connections, timeout=self.socket_timeout,
            socket_timeout=self.socket_timeout, socket_connect_timeout=self.connect_timeout,
            health_check_interval=30)
        return aioredis.Redis.from_pool(pool)

    @staticmethod
    def _template_of(entries: Sequence[str]) -> str | None:
        return next((e for e in entries if "://" in e), None)

    def _link(self, url: str) -> NodeLink:
        return NodeLink(url, self.scripts, connect_timeout=self.connect_timeout, reply_timeout=self.socket_timeout,
                        retry_after_failure=self.retry_after_failure)

    @property
    def pipe(self) -> RedisPipe:
        """The request path's connection to the one server (not on a cluster)."""
        if self.node is None:
            raise StoreUnavailable("no redis master known now")
        return self.node.pipe

    @property
    def failures(self) -> int:
        links = self.cluster.links.values() if self.cluster is not None else [self.node] if self.node else []
        return sum(link.failures for link in links)

    @property
    def node_round_trips(self) -> dict[str, int]:
        """Batches sent to each server (on a cluster, one round trip may reach several)."""
        links = self.cluster.links.values() if self.cluster is not None else [self.node] if self.node else []
        return {link.address: link.round_trips for link in links}

    # -- topology -------------------------------------------------------------------------------

    def _use_cluster(self, seeds: list[str]) -> None:
        self._template = seeds[0]
        self.url = seeds[0]  # a cluster node's URL: a RedisStore made from it finds the cluster too
        self.cluster = ClusterRouting([urlsplit(s).netloc.rpartition("@")[2] for s in seeds], self.scripts,
                                      lambda address: self._link(_node_url(address, self._template)),
                                      on_new_owner=self._after_failover, on_round=self._count_round)
        options = aioredis.connection.parse_url(seeds[0])
        for name in ("connection_class", "db", "host", "port"):
            options.pop(name, None)
        if urlsplit(seeds[0]).scheme == "rediss":
            options["ssl"] = True
        startup = []
        for seed in seeds:
            host, _, port = urlsplit(seed).netloc.rpartition("@")[2].rpartition(":")
            startup.append(ClusterNode(host, int(port)))
        self.redis = RedisCluster(startup_nodes=startup, max_connections=self.max_connections,
                                  socket_timeout=self.socket_timeout, socket_connect_timeout=self.connect_timeout,
                                  require_full_coverage=False, **options)

    async def _become_cluster(self) -> None:
        """``redis.url`` named a cluster node: it becomes the cluster's seed."""
        if self.cluster is not None:
            return
        log.info("redis at %s is a Redis Cluster node: using it as the cluster's seed", self.url)
        node, control = self.node, self.redis
        self._use_cluster([self.url])
        self.node = None
        assert self.cluster is not None
        await self.cluster.refresh()
        if node is not None:
            await node.close()
        await control.aclose()
        self._restart_listener()

    def _follow_master(self, address: str) -> None:
        """The sentinels name a (new) master: the request path's calls, the plain commands and the
        event stream go there from now on. The old master may stay a master for seconds (until the
        sentinels turn it into a replica): a connection left on it would read and hear the past."""
        assert self.sentinel is not None
        url = self.sentinel.data_url(address)
        old, self.node = self.node, self._link(url)
        old_control, self.redis = self.redis, self._control_client(url)
        loop = asyncio.get_running_loop()
        loop.create_task(_close_quietly(old_control))
        self._restart_listener()
        if old is not None:
            loop.create_task(old.close())
            loop.create_task(self._after_failover())

    async def _after_failover(self) -> None:
        """Another server took over: events published while it did may be lost, so the
        subscribers re-read what they cache."""
        for handler in self._reconnect_handlers:
            try:
                await handler()
            except Exception:  # a handler's failure must not stop the others
                log.exception("reconnect handler failed after a failover")

    # -- life -----------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            if self.sentinel is not None:
                await self.sentinel.discover()
                self.sentinel.start()
            if self.cluster is None and self.node is not None and self.sentinel is None:
                info = (await self.node.send([_INFO_CLUSTER]))[0]
                if isinstance(info, bytes) and b"cluster_enabled:1" in info:
                    await self._become_cluster()
            if self.cluster is not None:
                if await self.cluster.refresh():
                    await self.cluster.load_scripts()
            elif self.node is not None:
                await self.node.load_scripts()
        except StoreError:
            pass
        if not await self.ready():
            log.warning("redis at %s cannot serve the scripts yet; serving degraded until it can", self.url)
        self._listener = asyncio.create_task(self._listen(), name="apigw-store-events")

    def _restart_listener(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="apigw-store-events")

    async def close(self) -> None:
        self._closing = True
        await stop_tasks([self._listener])
        if self.sentinel is not None:
            await self.sentinel.close()
        if self.cluster is not None:
            await self.cluster.close()
        if self.node is not None:
            await self.node.close()
        await self.redis.aclose()

    # -- scripts --------------------------------------------------------------------------------

    async def run(self, *calls: ScriptCall) -> list[Any]:
        if self.cluster is not None:
            replies = await self._run_on_cluster(calls)
            for reply in replies:
                if isinstance(reply, StoreError):
                    raise reply
            return replies
        node = self.node
        if node is None:
            self._master_failed()
            raise StoreUnavailable("no redis master known now")
        node.refuse_while_down()
        evalsha = self.scripts.evalsha
        commands = [evalsha(call) for call in calls]
        replies = await self._send(node, commands)
        # One scan in C for the common case, no error reply.
        if ReplyError in map(type, replies):
            return await self._reply_errors(node, calls, commands, replies)
        node.mark_up()
        return replies

    async def _reply_errors(self, node: NodeLink, calls: Sequence[ScriptCall], commands: list[bytes],
                            replies: list[Any]) -> list[Any]:
        again = [i for i, reply in enumerate(replies)
                 if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")]
        if again:  # a restarted or flushed Redis: those calls did not run
            await node.load_scripts()
            for i, reply in zip(again, await self._send(node, [commands[i] for i in again]), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, ReplyError):
                text = str(reply)
                if text.startswith("MOVED") and self.sentinel is None:
                    return await self._moved(calls, replies)
                if text.startswith(("READONLY", "MASTERDOWN")) and self.sentinel is not None:
                    self._master_failed()  # a master turned replica: it did not run the writes
                    raise StoreUnavailable(f"redis at {node.address}: {text}")
                raise StoreError(text)
        node.mark_up()
        return replies

    async def run_each(self, *calls: ScriptCall) -> list[Any]:
        cluster = self.cluster
        if cluster is not None:
            return await cluster.run_each(calls)
        return await super().run_each(*calls)

    async def _run_on_cluster(self, calls: Sequence[ScriptCall]) -> list[Any]:
        cluster = self.cluster
        assert cluster is not None
        return await cluster.run_each(calls)

    def _count_round(self) -> None:
        # Counted as each round is sent, not as a difference around the batch: batches overlap.
        self.round_trips += 1

    async def _send(self, node: NodeLink, commands: list[bytes]) -> list[Any]:
        self.round_trips += 1
        try:
            # On an open connection the batch leaves now and its future is awaited here, without
            # the pipe's coroutines (NodeLink.submit); else ``send`` connects first.
            future = node.submit(commands)
            if future is None:
                return await node.send(commands)
            try:
                return await future
            except PipeBroken as error:
                raise node.broken(error) from None
        except StoreUnavailable:
            self._master_failed()
            raise

    def _master_failed(self) -> None:
        if self.sentinel is not None:
            self.sentinel.suspect()

    async def _moved(self, calls: Sequence[ScriptCall], replies: list[Any]) -> list[Any]:
        """A cluster node taken for a single server: the calls it redirected did not run; they go to
        their owners now (the others ran, and are not sent again)."""
        await self._become_cluster()
        redirected = [i for i, r in enumerate(replies) if isinstance(r, ReplyError) and str(r).startswith("MOVED")]
        for i, reply in zip(redirected, await self._run_on_cluster([calls[i] for i in redirected]), strict=True):
            replies[i] = reply
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply if isinstance(reply, StoreError) else StoreError(str(reply))
        return replies

    async def ready(self) -> bool:
        """Whether the request path's scripts can run now: every master answers and knows them."""
        if self.cluster is not None:
            return await self.cluster.ready() and await self.ping()
        node = self.node
        if node is None:
            return False
        try:
            node.refuse_while_down()
            return await node.has_scripts() and await self.ping()
        except StoreError:
            return False

    async def memory_limits(self) -> list[MemoryLimit] | None:
        """CONFIG GET maxmemory and maxmemory-policy on every master (the one server, the Sentinel
        group's master, each cluster master); None when one refuses CONFIG or cannot be reached."""
        if self.cluster is not None:
            links = [self.cluster.link(address) for address in self.cluster.masters]
        else:
            links = [self.node] if self.node is not None else []
        limits = []
        for link in links:
            try:
                size, policy = await link.send([_CONFIG_MAXMEMORY, _CONFIG_POLICY])
            except StoreError:
                return None
            if isinstance(size, ReplyError) or isinstance(policy, ReplyError) or len(size) != 2 or len(policy) != 2:
                return None
            limits.append(MemoryLimit(link.address, int(size[1]), policy[1].decode()))
        return limits

    # -- plain commands -------------------------------------------------------------------------

    async def _guarded(self, command: Callable[[], Awaitable[Any]]) -> Any:
        pause = self.node if self.cluster is None else None
        if pause is not None:
            pause.refuse_while_down()
        try:
            result = await _once_more_if_stale(command)
        except _UNREACHABLE as error:
            self._master_failed()
            if pause is not None:
                raise pause.mark_down(error) from None
            raise StoreUnavailable(f"redis unreachable: {error}") from None
        except RedisError as error:
            raise StoreError(str(error)) from error
        if pause is not None:
            pause.mark_up()
        return result

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

    async def xadd(self, key: str, fields: Mapping[str, bytes | str], maxlen: int) -> bytes:
        return await self._guarded(lambda: self.redis.xadd(key, dict(fields), maxlen=maxlen, approximate=False))

    async def xrevrange(self, key: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        entries = await self._guarded(lambda: self.redis.xrevrange(key, count=count))
        return [(entry_id, dict(fields)) for entry_id, fields in entries]

    # -- events ---------------------------------------------------------------------------------

    # On a Redis Cluster, events use the cluster-wide (not sharded) pub/sub: the scripts PUBLISH
    # from inside Lua (config changes, cache fills), and a sharded channel would have to share the
    # slot of each script's keys. A PUBLISH on any node reaches the subscribers of every node, so
    # the listener subscribes on one master of the slot map it keeps itself, and after a break on
    # the next master of a refreshed map (redis-py's cluster pub/sub would go back to the node its
    # own slot cache names, a dead one until that cache is refreshed).
    async def publish(self, channel: str, message: bytes) -> None:
        await self._guarded(lambda: self.redis.publish(channel, message))

    def _on_subscribe(self, channel: str) -> None:
        # The listener subscribes to every known channel each time it (re)connects, and to a new one
        # within LISTEN_TURN while it is connected.
        self._pubsub_ready.set()

    async def listening(self, timeout: float = 2.0) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._listened.issuperset(self._handlers):
            if loop.time() >= deadline or self._listener is None or self._listener.done():
                return False
            await asyncio.sleep(0.01)
        return True

    async def _listen(self) -> None:
        """Deliver messages to handlers; after any break, resubscribe and tell the reconnect handlers."""
        delay = 0.05
        first = True
        turn = 0
        while not self._closing:
            await self._pubsub_ready.wait()
            source, node = self.redis, None
            if self.cluster is not None:
                try:
                    source, node = await self._cluster_event_source(turn)
                except StoreError as error:
                    log.debug("event stream: %s", error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                finally:
                    turn += 1
            pubsub = source.pubsub()
            subscribe, receive = pubsub.subscribe, pubsub.get_message
            try:
                channels = list(self._handlers)
                await subscribe(*channels)
                self._listened = set(channels)
                self.event_node = node
                delay = 0.05
                if not first:
                    log.info("event stream reconnected; re-reading shared state")
                    for handler in self._reconnect_handlers:
                        await handler()
                first = False
                while not self._closing:
                    if set(self._handlers) != set(channels):
                        new = [c for c in self._handlers if c not in channels]
                        await subscribe(*new)
                        channels.extend(new)
                        self._listened = set(channels)
                    message = await receive(ignore_subscribe_messages=True, timeout=LISTEN_TURN)
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
                self.event_node = None
                self._listened = set()
                try:
                    await pubsub.aclose()
                    if source is not self.redis:
                        await source.aclose()
                except Exception:  # the connection is already gone
                    pass

    async def _cluster_event_source(self, turn: int) -> tuple[aioredis.Redis, str]:
        """A connection to one master for the event stream: the first time, of the map known now;
        after a break, of a map asked for again, the next master in turn."""
        cluster = self.cluster
        assert cluster is not None
        if (turn or not cluster.masters) and not await cluster.refresh():
            raise StoreUnavailable("redis cluster: no node answers for the slot map")
        masters = cluster.masters
        if not masters:
            raise StoreUnavailable("redis cluster: no master known now")
        address = masters[turn % len(masters)]
        client = aioredis.Redis.from_url(_node_url(address, self._template), socket_timeout=self.socket_timeout,
                                         socket_connect_timeout=self.connect_timeout, health_check_interval=30)
        return client, address
