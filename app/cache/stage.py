"""The cache in the request pipeline: lookup before the backend, store after it.

Round trips: the lookup script rides with the rate-limit call (one round trip on a hit); the store
script rides with the breaker's outcome write (the second round trip of a miss). On a miss the
lookup also takes the key's fill lock, so that across the fleet one request goes to the backend
while the others wait (bounded) for the entry it stores; an expired entry still in its grace
period is kept at hand to answer instead of a backend failure (stale-if-error).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.cache.entry import inflate, read_answer
from app.cache.manager import (DUE, FINAL, FRESH, HIT, MAY_LOCK, MISS, PASS_MS, STALE, VARY, WAIT, WARM,
                               ApiCacheManager, new_token)
from app.cache.policy import CacheRequest, CacheStrategy, Lookup, StoreDecision, vary_names
from app.cache.tee import TeeResponse
from app.pipeline.exchange import Exchange, RawHeaders, Reply, new_request_id
from app.observability.metrics import CACHE_LOOKUPS, STORE_ERRORS
from app.pipeline.stage import Stage
from app.routing.router import Route
from app.store import ScriptCall, StoreError, StoreUnavailable

log = logging.getLogger("apigw.cache")

Forward = Callable[[Exchange, Route], Awaitable[Reply]]

_NOTE = "cache"
# Waiters look again at least this often, in case the fill message was missed.
_POLL = 0.2
_VARY_HINTS = 10_000
# Warmed entries are fetched again when less than this share (per mille) of their lifetime is left.
_WARM_MARGIN = 100
X_CACHE = b"x-cache"
_LABELS = {b"HIT": "hit", b"MISS": "miss", b"STALE": "stale", b"BYPASS": "bypass"}


@dataclass(slots=True)
class _Pending:
    """One request's dealings with the cache, kept in ``ex.notes``."""

    request: CacheRequest
    entry_id: str
    base_id: str
    names: tuple[str, ...]
    token: str = ""
    holds_lock: bool = False
    admitted: bool = False
    # Set once the answer did not come from the backend (HIT, STALE) or the cache is out (BYPASS).
    done: bool = False
    # The expired entry's raw parts, kept to answer instead of a failure.
    stale: tuple[int, bytes, bytes, bytes] | None = None
    header_at: int = -1


class CacheStage(Stage):
    name = "cache"

    def __init__(self, manager: ApiCacheManager, forward: Forward | None = None,
                 match: Callable[[str, str], Route | None] | None = None) -> None:
        self.manager = manager
        self.settings = manager.settings
        self.store = manager.store
        # Background fetches (stale-while-revalidate, warming) go through the orchestrator.
        self.forward = forward
        self.match = match
        self._vary_hints: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._waiters: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warmer: asyncio.Task[None] | None = None

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.store.subscribe(self.manager.keys.channel, self._on_filled)
        if self.settings.enabled and self.settings.warm and self.forward is not None:
            self._warmer = asyncio.create_task(self._warm_loop(), name="apigw-cache-warm")

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._warmer] if self._warmer else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def strategy(self) -> CacheStrategy:
        return self.manager.strategy  # replaceable at any time: the extension point

    def _on_filled(self, message: bytes) -> None:
        event = self._waiters.pop(message.decode("latin-1"), None)
        if event is not None:
            event.set()

    # -- before the backend ---------------------------------------------------------------------

    def _cache_request(self, ex: Exchange, route: Route) -> CacheRequest:
        # The client's schema version is part of the key: a route's transform says where it is
        # (header or path segment); without one, the seed's X-API-Version header.
        transform = route.compiled.get("transform")
        if transform is not None:
            version = transform.client_version(ex.headers, ex.path)
        else:
            raw = ex.header(b"x-api-version")
            version = raw.decode("latin-1") if raw else ""
        return CacheRequest(method=ex.method, route=route.key, path=ex.path, query=ex.query_string,
                            headers=ex.headers, schema_version=version, settings=route.spec.cache)

    def applies_to(self, route: Route | None) -> bool:
        return route is not None and self.settings.enabled and route.spec.cache.enabled

    def admission_call(self, ex: Exchange, route: Route | None) -> ScriptCall | None:
        if route is None or not self.settings.enabled or not route.spec.cache.enabled:
            return None
        request = self._cache_request(ex, route)
        strategy = self.manager.strategy
        decision = strategy.lookup(request)
        if decision is Lookup.BYPASS:
            self._mark(ex, route, None, b"BYPASS")
            return None
        base_id = strategy.cache_key(request)
        names = self._vary_hints.get(base_id, ())
        entry_id = strategy.cache_key(request, names) if names else base_id
        pending = _Pending(request, entry_id, base_id, names)
        ex.notes[_NOTE] = pending
        if ex.method == "GET":
            # Read a cacheable body whole (up to what may be stored) so that it can be kept.
            ex.notes["read_body_up_to"] = self.settings.max_body_size
        if decision is Lookup.REFRESH:
            self._mark(ex, route, pending, b"MISS")
            return None
        if ex.method == "GET":
            pending.token = new_token()
            return self.manager.lookup_call(ex.path, entry_id, base_id, names, MAY_LOCK, pending.token)
        return self.manager.lookup_call(ex.path, entry_id, base_id, names, FINAL)

    async def admit(self, ex: Exchange, route: Route | None, store_reply: Any) -> Reply | None:
        pending: _Pending | None = ex.notes.get(_NOTE)
        if pending is None or route is None or pending.header_at >= 0:
            return None  # no lookup made (bypassed or refreshing)
        pending.admitted = True
        reply = store_reply
        if isinstance(reply, BaseException) or reply[0] == VARY or reply[0] == WAIT:
            try:
                reply = await self._settle(pending, reply)
            except StoreError as error:
                return self._bypass(ex, route, pending, error)
        code = reply[0]
        if code == STALE and reply[1] == 1 and route.compiled.get("transform") is not None:
            # A background refresh would skip the route's transform: refresh in this request instead.
            code = MISS
        if code == HIT or code == STALE:
            try:
                status, headers, compressed, age = read_answer(reply[2], reply[3], reply[4])
            except ValueError as error:  # an entry this build cannot read (an older build's)
                return self._bypass(ex, route, pending, error)
            body = await inflate(reply[5]) if compressed else reply[5]
            if code == STALE:
                pending.done = True
                if reply[1] == 1:
                    self._spawn(self._refresh(ex, route, pending))
                return self._answer(ex, route, pending, status, headers, body, age, b"STALE")
            return self._answer(ex, route, pending, status, headers, body, age, b"HIT")
        pending.holds_lock = code == MISS and reply[1] == 1
        if len(reply) > 5 and reply[3] is not None and reply[4] is not None:
            pending.stale = (reply[2], reply[3], reply[4], reply[5])
        self._mark(ex, route, pending, b"MISS")
        return None

    async def _settle(self, pending: _Pending, reply: Any) -> Any:
        """Follow the lookup to a final answer: re-key for the resource's Vary, wait for a fill."""
        if isinstance(reply, BaseException):
            raise reply if isinstance(reply, StoreError) else StoreUnavailable(str(reply))
        if reply[0] == VARY:
            names = vary_names((reply[3] or b"").decode("latin-1"))
            self._learn_vary(pending.base_id, names)
            pending.names = names
            pending.entry_id = self.strategy.cache_key(pending.request, names) if names else pending.base_id
            mode = MAY_LOCK if pending.token else FINAL
            reply = await self.store.call(*self._lookup(pending, mode))
            if reply[0] == VARY:  # the resource's Vary changed under us: a plain miss
                return [MISS, 0, reply[2]]
        if reply[0] == WAIT:
            reply = await self._wait(pending)
        return reply

    def _lookup(self, pending: _Pending, mode: str) -> tuple[str, Any, Any]:
        call = self.manager.lookup_call(pending.request.path, pending.entry_id, pending.base_id, pending.names,
                                        mode, pending.token)
        return call.script, call.keys, call.args

    async def _wait(self, pending: _Pending) -> Any:
        """Another request is filling this entry: wait for its message (or poll), at most
        ``lock_wait``; past it, look once more without waiting and go to the backend."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.lock_wait
        while True:
            remaining = deadline - loop.time()
            final = remaining <= 0
            if not final:
                event = self._waiters.get(pending.entry_id)
                if event is None:
                    event = self._waiters[pending.entry_id] = asyncio.Event()
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, _POLL))
                except TimeoutError:
                    pass
            reply = await self.store.call(*self._lookup(pending, FINAL if final else MAY_LOCK))
            if reply[0] != WAIT:
                return reply if reply[0] != VARY else [MISS, 0, reply[2]]

    def _answer(self, ex: Exchange, route: Route, pending: _Pending, status: int, headers: RawHeaders,
                body: bytes, age: int, how: bytes) -> Reply:
        """``headers``: a list of the entry's, decoded for this answer (this adds to it)."""
        pending.done = True
        headers.append((b"age", b"%d" % age))
        self._mark(ex, route, pending, how)
        # A cached answer is still the backend's (the library's response transform applies).
        return Reply(status, headers, b"" if ex.method == "HEAD" else body, from_backend=True)

    def _bypass(self, ex: Exchange, route: Route, pending: _Pending, error: Exception) -> None:
        STORE_ERRORS.labels("cache").inc()
        log.debug("cache bypassed for %s: %s", ex.path, error)
        pending.done = True
        pending.holds_lock = False
        self._mark(ex, route, pending, b"BYPASS")
        return None

    def _mark(self, ex: Exchange, route: Route, pending: _Pending | None, how: bytes) -> None:
        """Set X-Cache (replacing an earlier verdict) and count the lookup's result."""
        if pending is not None and pending.header_at >= 0:
            ex.response_headers[pending.header_at] = (X_CACHE, how)
        else:
            ex.response_headers.append((X_CACHE, how))
            if pending is not None:
                pending.header_at = len(ex.response_headers) - 1
        counters = route.compiled.get("cache_lookups")
        if counters is None:
            # The children's value objects: Counter.inc would check on every call that a child
            # from labels() is observable, which it always is.
            counters = route.compiled["cache_lookups"] = {
                value: CACHE_LOOKUPS.labels(route.key, label)._value.inc for value, label in _LABELS.items()}
        counters[how](1)

    # -- after the backend ----------------------------------------------------------------------

    def completion_call(self, ex: Exchange, route: Route, reply: Reply) -> ScriptCall | None:
        pending: _Pending | None = ex.notes.get(_NOTE)
        if pending is None or pending.done:
            return None
        return self._completion(pending, reply)

    def _completion(self, pending: _Pending, reply: Reply) -> ScriptCall | None:
        decision = None
        if reply.stream is not None or len(reply.body) <= self.settings.max_body_size:
            decision = self.strategy.storable(pending.request, reply.status, reply.headers)
        if decision is not None and reply.stream is not None:
            # Unknown length: keep a copy while the client is served; store it once complete
            # (one more round trip, after the answer went out).
            self._tee(pending, reply, decision)
            return None
        if decision is None:
            if not pending.holds_lock:
                return None
            # A failure may pass; anything else will not be kept next time either: skip the lock.
            pass_ms = 0 if reply.status >= 500 else PASS_MS
            return self.manager.release_call(pending.entry_id, pending.token, pass_ms)
        return self._store_call(pending, decision, reply.status, reply.body)

    def _store_call(self, pending: _Pending, decision: StoreDecision, status: int, body: bytes) -> ScriptCall:
        entry_id = pending.entry_id
        if decision.vary != pending.names:
            self._learn_vary(pending.base_id, decision.vary)
            entry_id = self.strategy.cache_key(pending.request, decision.vary) if decision.vary else pending.base_id
        if entry_id != pending.entry_id and pending.holds_lock:
            # Filed under another variant than the one locked: free the lock, waiters look again.
            self._spawn(self._release_quietly(pending))
        token = pending.token if pending.holds_lock and entry_id == pending.entry_id else ""
        return self.manager.store_call(pending.request, entry_id, pending.base_id, decision, status, body, token)

    def _tee(self, pending: _Pending, reply: Reply, decision: StoreDecision) -> None:
        status = reply.status

        def complete(body: bytes) -> None:
            self._spawn(self._store_later(pending, self._store_call(pending, decision, status, body)))

        def abandon(too_large: bool) -> None:
            if pending.holds_lock:
                pass_ms = PASS_MS if too_large else 0
                self._spawn(self._store_later(pending, self.manager.release_call(
                    pending.entry_id, pending.token, pass_ms)))

        reply.stream = TeeResponse(reply.stream, self.settings.max_body_size, complete, abandon)  # type: ignore[assignment]

    async def _store_later(self, pending: _Pending, call: ScriptCall) -> None:
        try:
            await self.store.run(call)
        except StoreError as error:
            STORE_ERRORS.labels("cache").inc()
            log.debug("cache store after a stream failed: %s", error)
        finally:
            self._wake(pending.entry_id)

    async def completed(self, ex: Exchange, route: Route, reply: Reply, store_reply: Any) -> None:
        pending: _Pending | None = ex.notes.get(_NOTE)
        if isinstance(store_reply, BaseException):
            STORE_ERRORS.labels("cache").inc()
        if pending is not None:
            self._wake(pending.entry_id)

    def _wake(self, entry_id: str) -> None:
        event = self._waiters.pop(entry_id, None)
        if event is not None:
            event.set()

    async def _release_quietly(self, pending: _Pending) -> None:
        try:
            await self.store.run(self.manager.release_call(pending.entry_id, pending.token, 0))
        except StoreError:
            pass
        self._wake(pending.entry_id)

    def ended_early(self, ex: Exchange, route: Route | None, reply: Reply, store_reply: Any) -> None:
        # E.g. the rate limiter refused the request whose batched lookup took the fill lock: free it
        # now (off this request's path) rather than make the key's other requests wait it out.
        pending: _Pending | None = ex.notes.get(_NOTE)
        if pending is None:
            return
        if pending.header_at < 0 and route is not None:
            self._mark(ex, route, pending, b"BYPASS")  # answered by neither the cache nor the backend
        if not pending.admitted and isinstance(store_reply, list) and store_reply[:2] == [MISS, 1]:
            pending.holds_lock = True  # the lookup took the lock, but admit never saw it
        if pending.holds_lock:
            pending.done = True
            pending.holds_lock = False
            self._spawn(self._release_quietly(pending))

    def stale_reply(self, ex: Exchange, route: Route) -> Reply | None:
        pending: _Pending | None = ex.notes.get(_NOTE)
        if pending is None or pending.stale is None:
            return None
        now_ms, meta, head, body = pending.stale
        if now_ms >= int(meta.split(b" ")[2]):
            return None  # past its grace
        status, headers, compressed, age = read_answer(now_ms, meta, head)
        return self._answer(ex, route, pending, status, headers, zlib.decompress(body) if compressed else body,
                            age, b"STALE")

    # -- background fetches ---------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_and_store(self, ex: Exchange, route: Route, pending: _Pending) -> bool:
        """Whether the answer was stored."""
        assert self.forward is not None
        ex.notes["read_body_up_to"] = self.settings.max_body_size
        reply = await self.forward(ex, route)
        try:
            call = self._completion(pending, reply)
            if call is not None:
                await self.store.run(call)
                return call.script == "cache_set"
            if isinstance(reply.stream, TeeResponse):
                return await reply.stream.drain()  # stored by the tee on release
            return False
        finally:
            if reply.stream is not None:
                reply.stream.release()
            self._wake(pending.entry_id)

    async def _refresh(self, ex: Exchange, route: Route, pending: _Pending) -> None:
        """Stale-while-revalidate: this replica holds the lock; fetch anew and store."""
        if self.forward is None:
            return
        again = Exchange(method="GET", path=ex.path, raw_path=ex.raw_path, query_string=ex.query_string,
                         headers=[(n, v) for n, v in ex.headers if n != b"content-length"],
                         client_addr=ex.client_addr, scheme=ex.scheme, request_id=new_request_id())
        fresh = _Pending(pending.request, pending.entry_id, pending.base_id, pending.names, pending.token,
                         holds_lock=True)
        try:
            await self._fetch_and_store(again, route, fresh)
        except Exception:  # a background refresh must never take the replica down
            log.exception("background refresh of %s failed", ex.path)

    async def _warm_loop(self) -> None:
        loop = asyncio.get_running_loop()
        due = {path: 0.0 for path in self.settings.warm}
        while True:
            for path, when in list(due.items()):
                if when <= loop.time():
                    try:
                        due[path] = loop.time() + await self._warm_one(path)
                    except Exception:
                        log.exception("warming %s failed", path)
                        due[path] = loop.time() + 5.0
            await asyncio.sleep(max(0.05, min(due.values()) - loop.time()))

    async def _warm_one(self, target: str) -> float:
        """Fetch ``target`` when it is missing or about to expire (one replica does, by the lock);
        answers the seconds until it should be looked at again."""
        path, _, query = target.partition("?")
        route = self.match(path, "GET") if self.match is not None else None
        if route is None or not route.spec.cache.enabled:
            log.warning("cache.warm: no caching GET route for %s", target)
            return 60.0
        if route.compiled.get("transform") is not None:
            log.warning("cache.warm: %s is on a route with a transform; not warmed", target)
            return 3600.0
        ex = Exchange(method="GET", path=path, raw_path=path.encode(), query_string=query.encode(),
                      headers=[(b"host", b"apigw-warm")], client_addr="127.0.0.1", request_id=new_request_id())
        request = self._cache_request(ex, route)
        base_id = self.strategy.cache_key(request)
        names = self._vary_hints.get(base_id, ())
        pending = _Pending(request, self.strategy.cache_key(request, names) if names else base_id, base_id,
                           names, new_token())
        try:
            reply = await self.store.call(*self._lookup_warm(pending, _WARM_MARGIN))
        except StoreError:
            return 1.0
        if reply[0] == FRESH:
            fresh_ms, _, _, stored_ms = (int(part) for part in reply[3].split(b" "))
            due_ms = fresh_ms - (fresh_ms - stored_ms) * _WARM_MARGIN // 1000
            return max(0.05, (due_ms - reply[2]) / 1000)
        if reply[0] == DUE and reply[1] == 1:
            pending.holds_lock = True
            if await self._fetch_and_store(ex, route, pending):
                return 0.2  # look again: the next peek knows the stored entry's expiry
            log.warning("cache.warm: the answer for %s could not be kept", target)
            return float(route.spec.cache.ttl or self.settings.ttl)
        return 1.0  # another replica is refreshing it

    def _lookup_warm(self, pending: _Pending, margin: int) -> tuple[str, Any, Any]:
        call = self.manager.lookup_call(pending.request.path, pending.entry_id, pending.base_id, pending.names, WARM,
                                        pending.token, margin)
        return call.script, call.keys, call.args

    def _learn_vary(self, base_id: str, names: tuple[str, ...]) -> None:
        self._vary_hints[base_id] = names
        self._vary_hints.move_to_end(base_id)
        if len(self._vary_hints) > _VARY_HINTS:
            self._vary_hints.popitem(last=False)
