"""The cache in the request pipeline: lookup before the backend, store after it.

Round trips: the lookup script rides with the rate-limit call (one round trip on a hit); the store
script rides with the breaker's outcome write (the second round trip of a miss), and so does the
purge after a successful unsafe request (``invalidation``). On a miss the
lookup also takes the key's fill lock, so that across the fleet one request goes to the backend
while the others wait (bounded) for the entry it stores (``singleflight``); an expired entry still
in its grace period is kept at hand to answer instead of a backend failure (stale-if-error).

The stage holds the hooks; the other ideas have modules of their own: what is written after the
backend (``fill``, with the stream copy of ``tee``), the background refresh (``refresh``), warming
(``warming``) and the Vary names learned per resource (``vary_hints``).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from app.background import stop_tasks
from app.cache.entry import inflate, read_answer
from app.cache.fill import Filler
from app.cache.conditional import CLIENT_CONDITIONS, not_modified, not_modified_headers, revalidation_fields
from app.cache.invalidation import SAFE_METHODS, invalidated_uris, target_uri
from app.cache.manager import ApiCacheManager, new_token
from app.cache.pending import Pending, cache_request
from app.cache.policy import CacheStrategy, Lookup
from app.cache.protocol import (FINAL, HIT, MAY_LOCK, MISS, STALE, VARY, WAIT, LookupReply, as_miss, lookup_reply,
                                peek_call, purge_calls, releases_fill_lock, took_fill_lock)
from app.cache.ranges import FILL_DROPPED, SHAPING, WHOLE, ranged_reply
from app.cache.refresh import Refresher
from app.cache.singleflight import FillWaiters
from app.cache.vary_hints import VaryHints
from app.cache.warming import CacheWarmer
from app.observability.metrics import CACHE_LOOKUPS, CACHE_STORES_REFUSED, STORE_ERRORS
from app.pipeline.exchange import Exchange, RawHeaders, Reply
from app.pipeline.stage import AFTER_ANSWER, BEFORE_ANSWER, CallGroup, Stage
from app.routing.router import Route
from app.store import ScriptCall, StoreError, StoreUnavailable

log = logging.getLogger("apigw.cache")

Forward = Callable[[Exchange, Route], Awaitable[Reply]]

X_CACHE = b"x-cache"
_LABELS = {b"HIT": "hit", b"MISS": "miss", b"STALE": "stale", b"BYPASS": "bypass"}


class CacheStage(Stage):
    name = "cache"

    def __init__(self, manager: ApiCacheManager, forward: Forward | None = None,
                 match: Callable[[str, str], Route | None] | None = None) -> None:
        self.manager = manager
        self.settings = manager.settings
        self.store = manager.store
        self._vary_hints = VaryHints()
        self.waiters = FillWaiters(self.store, manager.keys.channel)
        self.filler = Filler(manager, self.waiters, self._vary_hints)
        # Background fetches (stale-while-revalidate, warming) go through the orchestrator.
        self.refresher = Refresher(forward, self.filler) if forward is not None else None
        self.warmer = CacheWarmer(manager, self.refresher, self._vary_hints, match) \
            if self.refresher is not None else None
        self._warming: asyncio.Task[None] | None = None

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.waiters.start()
        if self.settings.enabled and self.settings.warm and self.warmer is not None:
            self._warming = asyncio.create_task(self.warmer.run(), name="apigw-cache-warm")

    async def close(self) -> None:
        await stop_tasks([self._warming])
        await self.filler.close()
        self.waiters.close()

    @property
    def strategy(self) -> CacheStrategy:
        return self.manager.strategy  # replaceable at any time: the extension point

    # -- before the backend ---------------------------------------------------------------------

    def applies_to(self, route: Route | None) -> bool:
        return route is not None and self.settings.enabled and route.spec.cache.enabled

    def admission_call(self, ex: Exchange, route: Route | None) -> ScriptCall | None:
        if route is None or not self.settings.enabled or not route.spec.cache.enabled:
            return None
        if ex.refusal is not None:  # refused (bad credentials): it must not take a fill lock
            return None
        if ex.method not in SAFE_METHODS:
            # Whether its own URI has entries to purge should it succeed: asked in this round trip.
            self._mark(ex, route, None, b"BYPASS")
            return peek_call(self.manager.bucket, target_uri(ex))
        request = cache_request(ex, route)
        strategy = self.manager.strategy
        decision = strategy.lookup(request)
        if decision is Lookup.BYPASS:
            self._mark(ex, route, None, b"BYPASS")
            return None
        base_id = strategy.cache_key(request)
        names = self._vary_hints.get(base_id, ())
        entry_id = strategy.cache_key(request, names) if names else base_id
        pending = Pending(request, entry_id, base_id, names)
        ex.cache = pending
        may_fill = True
        if ex.method == "GET":
            # Read a cacheable body whole (up to what may be stored) so that it can be kept.
            ex.read_body_up_to = self.settings.max_body_size
            if ex.has_any(SHAPING):
                may_fill = self._may_fill(ex, route, pending)
        if decision is Lookup.REFRESH:
            self._mark(ex, route, pending, b"MISS")
            if ex.method != "GET":
                return None
            # The client wants an answer the backend confirmed: an entry kept for it is looked up
            # (never locked, never waited for) only to be revalidated (_refresh).
            return self.manager.lookup_call(request, entry_id, base_id, names, FINAL)
        if ex.method == "GET" and may_fill:
            pending.token = new_token()
            return self.manager.lookup_call(request, entry_id, base_id, names, MAY_LOCK, pending.token)
        return self.manager.lookup_call(request, entry_id, base_id, names, FINAL)

    @staticmethod
    def _may_fill(ex: Exchange, route: Route, pending: Pending) -> bool:
        """A GET with a Range or a precondition of its own: whether it may still take the fill lock
        (only for a bytes=0- range, sent on without it), and the range kept for its answer."""
        wanted = ex.header(b"range")
        if wanted is not None and route.compiled.transform is None:  # a transform rewrites the body
            pending.range = wanted
        if ex.header(b"if-match") is not None or ex.header(b"if-unmodified-since") is not None:
            return False
        if wanted is not None and wanted.strip().lower() != WHOLE:
            return False
        ex.not_forwarded = FILL_DROPPED
        return True

    async def admit(self, ex: Exchange, route: Route | None, store_reply: Any) -> Reply | None:
        if ex.method not in SAFE_METHODS:
            # Unknown (the store failed): purge as if there were entries.
            ex.cache_target_stored = store_reply != 0
            return None
        pending: Pending | None = ex.cache
        if pending is None or route is None or pending.header_at >= 0:
            if pending is not None and route is not None and ex.method == "GET":  # marked: a refresh
                await self._refresh(ex, route, pending, store_reply)
            return None  # no lookup made (bypassed), or one made only to revalidate (refresh)
        pending.admitted = True
        try:
            if isinstance(store_reply, BaseException):
                raise store_reply if isinstance(store_reply, StoreError) else StoreUnavailable(str(store_reply))
            reply = lookup_reply(store_reply)
            if reply.code == VARY or reply.code == WAIT:
                reply = await self._settle(pending, reply)
        except (StoreError, ValueError) as error:  # ValueError: an entry this build cannot read
            return self._bypass(ex, route, pending, error)
        code = reply.code
        if code == STALE and reply.locked and route.compiled.transform is not None:
            # A background refresh would skip the route's transform: refresh in this request instead.
            code = MISS
        if code == HIT or code == STALE:
            try:
                status, headers, compressed, age = read_answer(reply.head, reply.times.stored_ms, reply.now_ms)
            except ValueError as error:  # an entry this build cannot read (an older build's)
                return self._bypass(ex, route, pending, error)
            body = await inflate(reply.body) if compressed else reply.body
            if code == STALE:
                pending.done = True
                if reply.locked and self.refresher is not None:
                    self.filler.spawn(self.refresher.refresh(ex, route, pending))
                return self._answer(ex, route, pending, status, headers, body, age, b"STALE")
            return self._answer(ex, route, pending, status, headers, body, age, b"HIT")
        pending.holds_lock = code == MISS and reply.locked == 1
        if reply.head is not None:
            pending.stale = reply
            if ex.method == "GET":
                self._revalidate(ex, pending, reply)
        self._mark(ex, route, pending, b"MISS")
        return None

    async def _refresh(self, ex: Exchange, route: Route, pending: Pending, store_reply: Any) -> None:
        """A request with Cache-Control: no-cache (max-age=0, Pragma: no-cache) goes to the backend;
        with the entry kept for it, fresh or not, it asks with that entry's validators (RFC 9111
        section 5.2.1.4), and a 304 answers it with the stored body. Whatever goes wrong in the
        lookup leaves it a plain miss."""
        pending.admitted = True
        if not isinstance(store_reply, list):
            return
        try:
            reply = lookup_reply(store_reply)
            if reply.code == VARY:
                reply = await self._settle(pending, reply)
        except (StoreError, ValueError):
            return
        if reply.head is not None:
            pending.stale = reply
            self._revalidate(ex, pending, reply)

    @staticmethod
    def _revalidate(ex: Exchange, pending: Pending, reply: LookupReply) -> None:
        """An expired entry is kept and this request goes to the backend (it fills the key, or it
        did not wait for the one that does): ask with the entry's validators (none when the client
        sent conditions of its own), so that a 304 freshens it instead of a body sent again."""
        for name in CLIENT_CONDITIONS:
            if ex.header(name) is not None:
                return
        head = reply.head
        if head is None:
            return
        try:
            status, headers, _, _ = read_answer(head, 0, 0)
        except ValueError:
            return
        fields = revalidation_fields(headers) if status == 200 else []
        if fields:
            ex.validators = fields
            pending.revalidating = True

    async def _settle(self, pending: Pending, reply: LookupReply) -> LookupReply:
        """Follow the lookup to a final answer: re-key for the resource's Vary, wait for a fill."""
        if reply.code == VARY:
            names = reply.vary
            self._vary_hints.learn(pending.base_id, names)
            pending.names = names
            pending.entry_id = self.strategy.cache_key(pending.request, names) if names else pending.base_id
            reply = await self._look(pending, FINAL if not pending.token else MAY_LOCK)
            if reply.code == VARY:  # the resource's Vary changed under us: a plain miss
                return as_miss(reply)
        if reply.code == WAIT and not _ever_fresh(reply):
            # Kept only to be revalidated before each use (no-cache, stale on arrival): another
            # request's revalidation would not do for this one, so it does not wait for it.
            return reply
        if reply.code == WAIT:
            reply = await self.waiters.wait(pending.entry_id, self.settings.lock_wait,
                                            lambda final: self._look(pending, FINAL if final else MAY_LOCK))
            if reply.code == VARY:
                return as_miss(reply)
        return reply

    async def _look(self, pending: Pending, mode: str) -> LookupReply:
        call = self.manager.lookup_call(pending.request, pending.entry_id, pending.base_id, pending.names, mode,
                                        pending.token)
        return lookup_reply((await self.store.run(call))[0])

    def _answer(self, ex: Exchange, route: Route, pending: Pending, status: int, headers: RawHeaders,
                body: bytes, age: int, how: bytes) -> Reply:
        """``headers``: a list of the entry's, decoded for this answer (this adds to it)."""
        pending.done = True
        self._mark(ex, route, pending, how)
        if status == 200 and (ex.header(b"if-none-match") is not None or ex.header(b"if-modified-since") is not None):
            if not_modified(ex.header(b"if-none-match"), ex.header(b"if-modified-since"), headers):
                # The client's own copy is current: 304, without the body.
                fields = not_modified_headers(headers)
                fields.append((b"age", b"%d" % age))
                return Reply(304, fields, b"")
        headers.append((b"age", b"%d" % age))
        if pending.range is not None and status == 200:
            ranged = ranged_reply(pending.range, ex.header(b"if-range"), headers, body)
            if ranged is not None:
                return ranged
        # A cached answer is still the backend's (the library's response transform applies).
        return Reply(status, headers, b"" if ex.method == "HEAD" else body, from_backend=True)

    def _bypass(self, ex: Exchange, route: Route, pending: Pending, error: Exception) -> None:
        STORE_ERRORS.labels("cache").inc()
        log.debug("cache bypassed for %s: %s", ex.path, error)
        pending.done = True
        pending.holds_lock = False
        self._mark(ex, route, pending, b"BYPASS")
        return None

    def _mark(self, ex: Exchange, route: Route, pending: Pending | None, how: bytes) -> None:
        """Set X-Cache (replacing an earlier verdict) and count the lookup's result."""
        if pending is not None and pending.header_at >= 0:
            ex.response_headers[pending.header_at] = (X_CACHE, how)
        else:
            ex.response_headers.append((X_CACHE, how))
            if pending is not None:
                pending.header_at = len(ex.response_headers) - 1
        counters = route.compiled.cache_lookups
        if counters is None:
            counters = route.compiled.cache_lookups = {
                value: CACHE_LOOKUPS.cell(route.key, label) for value, label in _LABELS.items()}
            # Shown at 0 from the route's first lookup on (Filler.landed counts it): a rate() needs
            # the series before its first refusal.
            CACHE_STORES_REFUSED.cell(route.key)
        counters[how][0] += 1.0

    # -- after the backend ----------------------------------------------------------------------

    def completion_call(self, ex: Exchange, route: Route, reply: Reply) -> ScriptCall | CallGroup | None:
        if ex.method not in SAFE_METHODS:
            # Before the answer goes out, in this round trip: the entries its success made stale,
            # one call per bucket they are in.
            uris = invalidated_uris(ex, reply.status, reply.headers, ex.cache_target_stored) \
                if reply.from_backend else ()
            if not uris:
                return None
            purges = purge_calls(self.manager.bucket, uris)
            return purges[0] if len(purges) == 1 else CallGroup(purges)
        pending: Pending | None = ex.cache
        if pending is None or pending.done:
            return None
        call = self.filler.completion(pending, reply)
        if pending.freshened and pending.header_at >= 0:
            ex.response_headers[pending.header_at] = (X_CACHE, b"REVALIDATED")
        if pending.range is not None and reply.status == 200 and reply.stream is None:
            # The whole answer (kept above, when it may be) is what the backend was asked for, or
            # what it sent instead of a range: the client gets its range of it.
            ranged = ranged_reply(pending.range, ex.header(b"if-range"), reply.headers, reply.body, refuse=False)
            if ranged is not None:
                reply.status, reply.headers, reply.body = ranged.status, ranged.headers, ranged.body
        return call

    def completion_order(self, ex: Exchange, call: ScriptCall | CallGroup) -> int:
        # A store (the entry, its body, the indexes) goes after the answer when it releases the
        # entry's fill lock: the lock keeps the key's other requests, on any replica, waiting for it
        # meanwhile. One that holds no lock (filed under another variant than the one locked, or
        # after a lookup that waited) lands first, or the client's next request would miss. A purge
        # lands before the answer goes out (a client that wrote must not read the old entry back).
        if ex.method not in SAFE_METHODS:  # a purge, or one per bucket (a CallGroup): only these
            return BEFORE_ANSWER
        return AFTER_ANSWER if releases_fill_lock(call) else BEFORE_ANSWER  # type: ignore[arg-type]

    async def completed(self, ex: Exchange, route: Route, reply: Reply, store_reply: Any) -> None:
        pending: Pending | None = ex.cache
        if isinstance(store_reply, BaseException) or ex.method not in SAFE_METHODS and isinstance(store_reply, list) \
                and any(isinstance(r, BaseException) for r in store_reply):  # purges in several buckets
            STORE_ERRORS.labels("cache").inc()
        if pending is not None:
            self.filler.landed(pending, store_reply)

    def ended_early(self, ex: Exchange, route: Route | None, reply: Reply, store_reply: Any) -> None:
        # E.g. the rate limiter refused the request whose batched lookup took the fill lock: free it
        # now (off this request's path) rather than make the key's other requests wait it out.
        pending: Pending | None = ex.cache
        if pending is None:
            return
        if pending.header_at < 0 and route is not None:
            self._mark(ex, route, pending, b"BYPASS")  # answered by neither the cache nor the backend
        if not pending.admitted and isinstance(store_reply, list) and took_fill_lock(store_reply):
            pending.holds_lock = True  # the lookup took the lock, but admit never saw it
        if pending.holds_lock:
            pending.done = True
            pending.holds_lock = False
            self.filler.spawn(self.filler.release_quietly(pending))

    def stale_reply(self, ex: Exchange, route: Route) -> Reply | None:
        pending: Pending | None = ex.cache
        if pending is None or pending.stale is None:
            return None
        if self.strategy.lookup(pending.request) is Lookup.REFRESH:
            return None  # the client asked for an answer the backend confirmed, not a kept one
        stale = pending.stale
        if stale.now_ms >= stale.times.stale_ms:
            return None  # past its grace
        status, headers, compressed, age = read_answer(stale.head, stale.times.stored_ms, stale.now_ms)
        body = stale.body or b""
        return self._answer(ex, route, pending, status, headers, zlib.decompress(body) if compressed else body,
                            age, b"STALE")


def _ever_fresh(reply: LookupReply) -> bool:
    """Whether the entry a lookup carries was stored with some freshness (else it was kept only to
    be revalidated: policy.py); True when it carries none."""
    times = reply.times
    return times is None or times.fresh_ms > times.stored_ms
