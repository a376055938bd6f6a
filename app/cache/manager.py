"""``ApiCacheManager``: the seed's library API, and the store calls the pipeline stage batches.

Every shared-state change is one script (lua/cache_*.lua, called through app/cache/protocol.py): a
lookup reads the entry and, in the same call, updates its bucket's LRU order and counters, and
takes the fill lock on a miss; a store writes the entry, its bucket's indexes, enforces the
bucket's share of ``max_size`` and ``max_bytes`` and releases the lock. ``invalidate`` and
``get_stats`` ask every bucket, in one batch.
"""

from __future__ import annotations

import importlib
import itertools
import os
from typing import Any
from urllib.parse import urlencode
from zlib import crc32

import orjson

from app.cache import protocol
from app.cache.entry import CacheEntry, decode_entry, encode_body, encode_head
from app.cache.policy import (
    QUERY_SEPARATOR,
    CacheRequest,
    CacheStrategy,
    DefaultCacheStrategy,
    StoreDecision,
    sorted_query,
    uri_id,
)
from app.cache.protocol import FINAL, HIT, STALE, VARY, BucketKeys, CacheKeys, lookup_reply, share, stats_total
from app.config import CacheSection
from app.store import MemoryStore, ScriptCall, Store

_JSON = [(b"content-type", b"application/json")]


_DEFAULT_KEY = DefaultCacheStrategy.cache_key
_TOKENS = itertools.count()
_TOKEN_PREFIX = os.urandom(6).hex()


def new_token() -> str:
    """A fill-lock token, unique across the fleet (a random prefix per process, then a counter)."""
    return f"{_TOKEN_PREFIX}{next(_TOKENS):x}"


def load_strategy(settings: CacheSection) -> CacheStrategy:
    """``cache.strategy``: "default" or "package.module:Name" (built with the cache settings)."""
    if settings.strategy == "default":
        return DefaultCacheStrategy(settings)
    module_name, _, name = settings.strategy.partition(":")
    factory = getattr(importlib.import_module(module_name), name)
    strategy = factory(settings)
    if not isinstance(strategy, CacheStrategy):
        raise TypeError(f"cache.strategy {settings.strategy} is not a CacheStrategy")
    return strategy


def _json_default(value: Any) -> Any:
    # The seed's example caches {"agents": [...]}: its placeholder is kept as "...", sets as lists.
    # Anything else JSON cannot say is refused: a repr kept instead would come back as a string.
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if value is Ellipsis:
        return "..."
    raise TypeError(f"a value of type {type(value).__name__} cannot be cached: JSON cannot hold it")


class ApiCacheManager:
    """The fleet's response cache. Without a store it runs on the in-process memory store."""

    def __init__(self, max_size: int | None = None, ttl: int | None = None, store: Store | None = None,
                 strategy: CacheStrategy | None = None, settings: CacheSection | None = None,
                 **options: Any) -> None:
        chosen = {"max_size": max_size, "ttl": ttl, **options}
        base = settings or CacheSection()
        self.settings = base.model_validate({**base.model_dump(), **{k: v for k, v in chosen.items() if v is not None}})
        self.store = store or MemoryStore()
        self.keys = CacheKeys(self.store, self.settings.buckets)
        buckets = self.settings.buckets
        # Each bucket's share of the bounds (cache_set enforces them per bucket).
        self.bucket_max_size = share(self.settings.max_size, buckets)
        self.bucket_max_bytes = share(self.settings.max_bytes, buckets) if self.settings.max_bytes else 0
        self.strategy = strategy or load_strategy(self.settings)
        self._lock_ms = int(self.settings.lock_wait * 1000)

    # -- the seed's API -------------------------------------------------------------------------

    async def get(self, request_path: str, params: dict[str, Any] | None = None) -> Any:
        """The value cached for the path and params, or None (counted as a hit or a miss)."""
        entry = await self.get_entry(self._library_request(request_path, params))
        return entry.value if entry is not None else None

    async def set(self, request_path: str, params: dict[str, Any] | None, value: Any,
                  metadata: dict[str, Any] | None = None) -> bool:
        """Cache ``value`` (kept as JSON) for at most ``metadata["cache_time"]`` seconds and the
        configured ttl; False when it is above ``max_body_size``. TypeError, naming the type, when
        JSON cannot hold the value."""
        request = self._library_request(request_path, params)
        try:
            body = orjson.dumps(value, default=_json_default)
        except orjson.JSONEncodeError as error:  # a TypeError already; ours names the type
            raise TypeError(str(error.__cause__ or error)) from None
        if len(body) > self.settings.max_body_size:
            return False
        decision = self.strategy.storable(request, 200, list(_JSON), metadata)
        if decision is None:
            return False
        entry_id = self.strategy.cache_key(request, decision.vary)
        base_id = self.strategy.cache_key(request) if decision.vary else entry_id
        await self.store.run(self.store_call(request, entry_id, base_id, decision, 200, body,
                                             token="", metadata=metadata))
        return True

    async def invalidate(self, pattern: str) -> int:
        """Remove the entries whose request path matches ``pattern``: a glob (``*``, ``?``,
        ``[...]``), or a path, which covers that path and everything below it. Answers how many."""
        return sum(map(int, await self.store.run(*protocol.invalidate_calls(self.keys, pattern))))

    async def get_stats(self) -> dict[str, Any]:
        """Fleet-wide: the same numbers from every replica."""
        stats = stats_total(await self.store.run(*protocol.stats_calls(self.keys, self.bucket_max_size)))
        looked = stats.hits + stats.misses
        return {"hits": stats.hits, "misses": stats.misses, "hit_rate": stats.hits / looked if looked else 0.0,
                "size": stats.size}

    async def clear(self) -> int:
        return await self.invalidate("/")

    # -- entries --------------------------------------------------------------------------------

    async def get_entry(self, request: CacheRequest) -> CacheEntry | None:
        """The fresh entry for a request (no fill lock taken), or None."""
        names: tuple[str, ...] = ()
        entry_id = self.strategy.cache_key(request)
        base_id = entry_id
        for _ in range(2):
            reply = lookup_reply((await self.store.run(self.lookup_call(request, entry_id, base_id, names,
                                                                        FINAL)))[0])
            if reply.code != VARY:
                break
            names = reply.vary
            entry_id = self.strategy.cache_key(request, names)
        if reply.code != HIT and reply.code != STALE:
            return None
        return await decode_entry(entry_id, reply.times, reply.now_ms, reply.head, reply.body)

    def _library_request(self, path: str, params: dict[str, Any] | None) -> CacheRequest:
        query = urlencode(sorted((str(k), str(v)) for k, v in (params or {}).items())).encode()
        return CacheRequest(method="GET", route="", path=path, query=query)

    # -- store calls (batched by the pipeline) --------------------------------------------------

    def bucket(self, path: str, query: bytes) -> BucketKeys:
        """The bucket of a URI's entries: chosen by its path and query when the strategy's key is
        the default one (which names both), else by its path alone, so that the requests a custom
        key puts together (one that leaves tracking parameters out) share a bucket. A custom key
        must keep the path. A CRC-32 of what ``policy.uri_id`` names, the host aside: a URI's entries
        with and without it share a bucket."""
        if type(self.strategy).cache_key is not _DEFAULT_KEY:
            query = b""
        elif QUERY_SEPARATOR in query:
            query = sorted_query(query)
        keys = self.keys
        return keys.buckets[crc32(query, crc32(path.encode())) % keys.count]

    def _place(self, request: CacheRequest) -> tuple[BucketKeys, str]:
        """The request's bucket and the id of its URI (``policy.uri_id``: a lock lists the fill
        there, as its store lists the entry), worked out once per request: its lookup and its
        store or release each need both."""
        place = request.place
        if place is None:
            place = request.place = (self.bucket(request.path, request.query),
                                     uri_id(request.host, request.path, request.query))
        return place

    def lookup_call(self, request: CacheRequest, entry_id: str, base_id: str, names: tuple[str, ...], mode: str,
                    token: str = "", margin: int = 0) -> ScriptCall:
        bucket, uri = self._place(request)
        return protocol.lookup_call(bucket, request.path, entry_id, base_id, names, mode, token, self._lock_ms, uri,
                                    margin)

    def release_call(self, request: CacheRequest, entry_id: str, token: str, pass_ms: int) -> ScriptCall:
        """Give back the fill lock ``token`` holds on ``entry_id`` (``pass_ms``: then skip the lock that long)."""
        bucket, uri = self._place(request)
        return protocol.release_call(bucket, request.path, entry_id, token, pass_ms, uri)

    def store_call(self, request: CacheRequest, entry_id: str, base_id: str, decision: StoreDecision,
                   status: int, body: bytes, token: str, metadata: dict[str, Any] | None = None) -> ScriptCall:
        min_size = self.settings.compress_min_size
        # Most bodies are below the size worth compressing: they skip the call.
        stored, compressed = encode_body(body, min_size) if len(body) >= min_size else (body, False)
        head = encode_head(status, decision.headers, compressed, decision.age, decision.vary, metadata)
        bucket, uri = self._place(request)
        return protocol.store_call(bucket, request.path, entry_id, base_id, decision.ttl_ms, decision.swr_ms,
                                   decision.grace_ms, head, stored, self.bucket_max_size, token, decision.vary, uri,
                                   decision.revalidate_ms, self.bucket_max_bytes)
