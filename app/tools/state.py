"""``python -m app state``: the fleet's shared state in Redis, for people.

It reads with the components' key schemas (never a scan of the keyspace) and changes nothing. Each
section also prints the ``redis-cli`` commands that show the same keys, so the README's key table
and what this command prints cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from app.cache.protocol import CacheKeys, CacheStats
from app.config import GatewayConfig
from app.control.activity_protocol import activity_keys, top_call, top_reply
from app.control.config_protocol import config_keys, decode_override, read_call, read_reply
from app.control.config_sync import ConfigSync
from app.ratelimit.protocol import BUCKET
from app.store.redis import RedisStore

BUSIEST = 10


@dataclass
class Section:
    key: str
    title: str
    data: Any
    commands: list[str] = field(default_factory=list)


def redis_cli(url: str) -> str:
    """The redis-cli command that reaches the Redis at ``url`` (a password is asked for, never shown)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        words = ["redis-cli", "-s", parts.path]
        db = parse_qs(parts.query).get("db", ["0"])[0]
    else:
        words = ["redis-cli", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
        words += ["--tls"] if parts.scheme == "rediss" else []
        db = parts.path.strip("/") or "0"
    words += ["-n", db] if db != "0" else []
    words += ["--user", parts.username] if parts.username else []
    words += ["--askpass"] if parts.password else []
    return " ".join(words)


def store_cli(store: RedisStore) -> str:
    """The redis-cli command that reaches a started store: a Sentinel group's master as the
    sentinels named it, a cluster with ``-c`` (redis-cli then follows the redirections)."""
    sentinel = store.sentinel
    command = redis_cli(sentinel.data_url(sentinel.address) if sentinel is not None and sentinel.address
                        else store.url)
    return command.replace("redis-cli ", "redis-cli -c ", 1) if store.cluster is not None else command


class StateReader:
    def __init__(self, store: RedisStore, config: GatewayConfig | None = None,
                 cache_store: RedisStore | None = None) -> None:
        """``cache_store``: the cache's own Redis (cache.redis), started; None, the cache is on ``store``."""
        self.store = store
        self.cache_store = cache_store or store
        self.config = config or GatewayConfig()
        self._redis_cli = store_cli(store)
        self._cache_cli = store_cli(self.cache_store)

    def _cli(self, *words: str, cli: str | None = None) -> str:
        """A redis-cli command line for the Redis read (``cli``: another one), keys quoted (they hold braces)."""
        quoted = (w if w.isupper() or w.lstrip("-").isdigit() else f"'{w}'" for w in words)
        return " ".join([cli or self._redis_cli, *quoted])

    async def config(self, args: Any = None) -> Section:
        keys = config_keys(self.store)
        read = read_reply((await self.store.run(read_call(keys)))[0])
        overrides = {}
        for key, document in sorted(read.documents.items()):
            override = decode_override(document)
            overrides[key] = {"version": override.version,
                              "route": override.spec if override.spec is not None else "deleted"}
        data = {"version": read.version, "route_overrides": overrides}
        return Section("config", "config (the admin API's changes on top of the config file)", data,
                       [self._cli("GET", keys.version), self._cli("HGETALL", keys.routes)])

    async def cache(self, args: Any = None) -> Section:
        store, cli = self.cache_store, self._cache_cli
        keys = CacheKeys(store, self.config.cache.buckets)
        hits = misses = evictions = entries = stored = 0
        fullest, most = keys.buckets[0], -1
        for bucket in keys.buckets:
            fields = await store.hgetall(bucket.stats)
            stats = CacheStats.from_hash(fields, int(await store.redis.zcard(bucket.lru)))
            hits, misses, evictions = hits + stats.hits, misses + stats.misses, evictions + stats.evictions
            # What cache.max_bytes bounds: the entries' heads and bodies summed (cache_set.lua).
            entries, stored = entries + stats.size, stored + int(fields.get(b"bytes", 0))
            if stats.size > most:
                fullest, most = bucket, stats.size
        data = {"hits": hits, "misses": misses, "hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
                "evictions": evictions, "entries": entries, "bytes": stored, "buckets": len(keys.buckets)}
        # The commands show the fullest bucket; every bucket has the same keys under its own tag.
        return Section("cache", f"cache (fleet-wide: the sum of its {len(keys.buckets)} buckets)", data, [
            self._cli("HGETALL", fullest.stats, cli=cli), self._cli("ZCARD", fullest.lru, cli=cli),
            self._cli("ZREVRANGE", fullest.lru, "0", "9", "WITHSCORES", cli=cli)])

    async def clients(self, args: Any = None, count: int = BUSIEST) -> Section:
        from app.control.activity import WINDOW_SECONDS

        keys = activity_keys(self.store)
        top = top_reply((await self.store.run(top_call(keys, WINDOW_SECONDS, count)))[0])
        busiest = [{"client": client, "requests": requests} for client, requests in top]
        current, meta = keys.current, keys.meta
        return Section("clients", f"busiest clients (requests in the last {WINDOW_SECONDS}-{2 * WINDOW_SECONDS} s)", busiest, [
            self._cli("ZREVRANGE", current, "0", str(count - 1), "WITHSCORES"), self._cli("HGETALL", meta)])

    async def ratelimits(self, args: Any = None) -> Section:
        limiter = self._limiter()
        await limiter.manager.reload()
        clients = {client_id: spec.model_dump(include=spec.model_fields_set)
                   for client_id, spec in sorted(limiter.manager.runtime_clients.items())}
        keys = [{"hash": digest, "client_id": owner.client_id, "tier": owner.tier, "roles": list(owner.roles)}
                for digest, (owner, source) in sorted(limiter.manager.api_key_entries().items())
                if source == "api"]
        manager = limiter.manager
        return Section("ratelimits", "rate limits set through the admin API (on top of the config file)",
                       {"client_configs": clients, "api_keys": keys},
                       [self._cli("HGETALL", manager.clients_key), self._cli("HGETALL", manager.api_keys_key)])

    async def client(self, args: Any = None) -> Section:
        client_id = getattr(args, "client_id", None)
        if not client_id:
            raise ValueError("state client: which client? (python -m app state client <id>)")
        limiter = self._limiter()
        stats = await limiter.get_client_stats(client_id)
        plan = limiter.plan(client_id)
        commands = [self._cli("GET" if limit.kind == BUCKET else "HGETALL", key)
                    for limit, key in zip(plan.limits, plan.keys, strict=True)]
        data = {"client_id": client_id, "limits": limiter.manager.client_config(client_id), "counters": stats,
                "keys": dict(zip(plan.names, plan.keys, strict=True))}
        return Section("client", f"client {client_id!r}: its limits and counters (fleet-wide)", data, commands)

    async def circuits(self, args: Any = None) -> Section:
        """Every circuit of the effective routes (the config file's plus the API's changes)."""
        from app.breaker.model import CircuitState
        from app.breaker.protocol import StoredBreaker, breaker_key
        from app.breaker.stage import target_breaker_name
        from app.routing.router import ApiGatewayRouter

        sync = ConfigSync(self.config, ApiGatewayRouter(self.config.router.routes), self.store)
        await sync.refresh()
        names = []
        for spec in sync.effective_routes():
            urls = [t.url for t in spec.targets]
            names.extend([spec.key] if len(urls) == 1 else [target_breaker_name(spec.key, u) for u in urls])
        now_ms = int(time.time() * 1000)
        circuits, commands = {}, []
        for name in names:
            key = breaker_key(self.store, name)
            stored = StoredBreaker.from_hash(await self.store.hgetall(key))
            circuits[name] = {"state": stored.state.value, "failures": stored.failures,
                              "times_opened": stored.opened, "generation": stored.gen,
                              "open_seconds_left": round(max(0.0, stored.open_until_us / 1000 - now_ms) / 1000, 1)
                              if stored.state is CircuitState.OPEN else 0}
            commands.append(self._cli("HGETALL", key))
        return Section("circuits", "circuits (shared by the fleet; a missing hash is a closed circuit)",
                       circuits, commands)

    async def health(self, args: Any = None) -> Section:
        """The fleet's verdict on each target of the routes that have active health checks."""
        from app.breaker.health_protocol import health_keys, verdicts_of
        from app.routing.router import ApiGatewayRouter

        sync = ConfigSync(self.config, ApiGatewayRouter(self.config.router.routes), self.store)
        await sync.refresh()
        routes, commands = {}, []
        for spec in sync.effective_routes():
            if spec.health_check is None:
                continue
            keys = health_keys(self.store, spec.key)
            urls = [t.url for t in spec.targets]
            verdicts = verdicts_of(await self.store.hgetall(keys.verdicts), urls)
            routes[spec.key] = {url: {"healthy": verdicts.get(url, True)} for url in urls}
            commands += [self._cli("HGETALL", keys.verdicts), self._cli("GET", keys.lease)]
        return Section("health", "target health (active checks, the fleet's verdict; no verdict yet = healthy)",
                       routes, commands)

    def _limiter(self) -> Any:
        from app.ratelimit.limiter import ApiGatewayRateLimiter

        return ApiGatewayRateLimiter(self.store, self.config.rate_limiter)


Reader = Callable[[StateReader, Any], Coroutine[Any, Any, Section]]
SECTIONS: dict[str, Reader] = {
    "config": StateReader.config,
    "cache": StateReader.cache,
    "clients": StateReader.clients,
    "ratelimits": StateReader.ratelimits,
    "circuits": StateReader.circuits,
    "health": StateReader.health,
    "client": StateReader.client,
}
# What "all" shows (one client needs its id).
OVERVIEW = ("config", "cache", "clients", "ratelimits", "circuits", "health")


def render(sections: list[Section]) -> str:
    lines: list[str] = []
    for section in sections:
        lines.append(f"== {section.title}")
        body = orjson.dumps(section.data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
        lines.extend("  " + line for line in body.splitlines())
        if section.commands:
            lines.append("  # the same with redis-cli:")
            lines.extend(f"  {command}" for command in section.commands)
        lines.append("")
    return "\n".join(lines)


async def read_state(url: str | None, config: GatewayConfig, prefix: str, wanted: list[str], args: Any) -> int:
    """Print the wanted sections; 0, or 1 when Redis cannot be read or a section is unknown. Without
    ``url``, the config's Sentinel group is asked for its master."""
    import sys

    from app.store import StoreError, StoreUnavailable

    unknown = [name for name in wanted if name not in SECTIONS]
    if unknown:
        print(f"state: unknown section {unknown[0]!r}; one of: all, {', '.join(SECTIONS)}", file=sys.stderr)
        return 1
    sentinel = None if url else config.redis.sentinel
    store = RedisStore(url, prefix, sentinel=sentinel, retry_after_failure=0.01)
    where = url or (f"the master of Sentinel group {sentinel.master!r}" if sentinel else "")
    # The cache's own Redis when cache.redis names one: the cache section is read there.
    own = config.cache.redis
    cache_store = None if own is None else RedisStore(own.url, own.prefix, cluster_nodes=own.cluster_nodes,
                                                      sentinel=own.sentinel, retry_after_failure=0.01)
    cache_where = "" if own is None else (own.url or ",".join(own.cluster_nodes or ()) or (
        f"the master of Sentinel group {own.sentinel.master!r}" if own.sentinel else "")) + " (cache.redis)"
    reading = where
    try:
        await store.start()
        if sentinel is not None and store.sentinel is not None and store.sentinel.address is None:
            raise StoreUnavailable(f"no sentinel of {', '.join(sentinel.nodes)} names a master {sentinel.master!r}")
        if cache_store is not None:
            await cache_store.start()
        reader = StateReader(store, config, cache_store)
        sections = []
        for name in wanted:
            reading = cache_where if name == "cache" and cache_store is not None else where
            sections.append(await SECTIONS[name](reader, args))
    except StoreError as error:
        print(f"state: cannot read Redis at {reading}: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"state: {error}", file=sys.stderr)
        return 1
    finally:
        await store.close()
        if cache_store is not None:
            await cache_store.close()
    if getattr(args, "json", False):
        print(orjson.dumps({s.key: {"data": s.data, "redis_cli": s.commands} for s in sections},
                           option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(sections))
    return 0
