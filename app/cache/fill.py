"""What the cache writes once the backend answered: the entry (a store), or the fill lock given
back (a release) when the answer cannot be kept.

A body of known length is judged at once and its write joins the pipeline's second round trip (sent
after the client is answered when it is a store: the fill lock, released by the store, keeps the
key's other requests waiting for it meanwhile). A
streamed body (unknown length) is copied while the client is served (``TeeResponse``) and stored
once complete, in one more round trip after the answer went out. Writes made off the request's
path run as background tasks, held here until they finish.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Coroutine
from typing import Any

from app.background import stop_tasks
from app.cache.conditional import freshened_headers
from app.cache.entry import read_answer
from app.cache.manager import ApiCacheManager
from app.cache.pending import Pending
from app.cache.policy import StoreDecision
from app.cache.protocol import store_refused
from app.cache.singleflight import FillWaiters
from app.cache.tee import TeeResponse
from app.cache.vary_hints import VaryHints
from app.observability.metrics import CACHE_STORES_REFUSED, STORE_ERRORS
from app.pipeline.exchange import Reply
from app.store import ScriptCall, StoreError

log = logging.getLogger("apigw.cache")

# After an answer that cannot be kept, requests for it skip the fill lock for this long.
PASS_MS = 10_000


class Filler:
    def __init__(self, manager: ApiCacheManager, waiters: FillWaiters, hints: VaryHints) -> None:
        self.manager = manager
        self.settings = manager.settings
        self.store = manager.store
        self.waiters = waiters
        self.hints = hints
        self._tasks: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        await stop_tasks(list(self._tasks))

    async def settled(self) -> None:
        """Wait until the writes running off the requests' path have landed (those they start too)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` off the request's path; it is cancelled by ``close``."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def completion(self, pending: Pending, reply: Reply) -> ScriptCall | None:
        """The write this answer needs: a store, a release of the lock, or none (a stream is
        stored later, by its copy)."""
        if pending.revalidating and reply.status == 304:
            return self._freshen(pending, reply)
        decision = None
        if reply.stream is not None or len(reply.body) <= self.settings.max_body_size:
            decision = self.manager.strategy.storable(pending.request, reply.status, reply.headers)
        if decision is not None and reply.stream is not None:
            self._copy_stream(pending, reply, decision)
            return None
        if decision is None:
            if not pending.holds_lock:
                return None
            # A failure may pass, and a 304 answers the client's own conditions; anything else will
            # not be kept next time either: skip the lock.
            pass_ms = 0 if reply.status >= 500 or reply.status == 304 else PASS_MS
            return self.manager.release_call(pending.request, pending.entry_id, pending.token, pass_ms)
        return self._store_call(pending, decision, reply.status, reply.body)

    def _freshen(self, pending: Pending, reply: Reply) -> ScriptCall | None:
        """The backend's 304 to the kept entry's validators: the entry, its fields updated from the
        304 (RFC 9111 section 4.3.4), becomes the answer, and is stored again for its new lifetime."""
        stale = pending.stale
        assert stale is not None and stale.head is not None
        status, stored, compressed, _ = read_answer(stale.head, 0, 0)
        body = stale.body or b""
        if compressed:
            body = zlib.decompress(body)
        headers = freshened_headers(stored, reply.headers)
        if reply.stream is not None:
            reply.stream.release()
            reply.stream = None
        reply.status, reply.headers, reply.body = status, headers, body
        pending.freshened = True
        decision = self.manager.strategy.storable(pending.request, status, headers)
        if decision is None:
            if not pending.holds_lock:
                return None
            return self.manager.release_call(pending.request, pending.entry_id, pending.token, 0)
        return self._store_call(pending, decision, status, body)

    def _store_call(self, pending: Pending, decision: StoreDecision, status: int, body: bytes) -> ScriptCall:
        entry_id = pending.entry_id
        if decision.vary != pending.names:
            self.hints.learn(pending.base_id, decision.vary)
            entry_id = self.manager.strategy.cache_key(pending.request, decision.vary) if decision.vary \
                else pending.base_id
        if entry_id != pending.entry_id and pending.holds_lock:
            # Filed under another variant than the one locked: free the lock, waiters look again.
            self.spawn(self.release_quietly(pending))
        token = pending.token if pending.holds_lock and entry_id == pending.entry_id else ""
        return self.manager.store_call(pending.request, entry_id, pending.base_id, decision, status, body, token)

    def _copy_stream(self, pending: Pending, reply: Reply, decision: StoreDecision) -> None:
        status = reply.status

        def complete(body: bytes) -> None:
            self.spawn(self._write_later(pending, self._store_call(pending, decision, status, body)))

        def abandon(too_large: bool) -> None:
            if pending.holds_lock:
                pass_ms = PASS_MS if too_large else 0
                call = self.manager.release_call(pending.request, pending.entry_id, pending.token, pass_ms)
                self.spawn(self._write_later(pending, call))

        reply.stream = TeeResponse(reply.stream, self.settings.max_body_size, complete, abandon)  # type: ignore[assignment]

    async def _write_later(self, pending: Pending, call: ScriptCall) -> None:
        reply: Any = None
        try:
            reply = (await self.store.run(call))[0]
        except StoreError as error:
            STORE_ERRORS.labels("cache").inc()
            log.debug("cache store after a stream failed: %s", error)
        finally:
            self.landed(pending, reply)

    def landed(self, pending: Pending, reply: Any) -> None:
        """A fill's write is in, or failed (``reply``: its reply, the error, or None): a store
        refused is counted, and the key's waiters look again."""
        if store_refused(reply):
            CACHE_STORES_REFUSED.cell(pending.request.route)[0] += 1
        self.waiters.wake(pending.entry_id)

    async def release_quietly(self, pending: Pending) -> None:
        """Give the fill lock back (its waiters look again), whatever the store says."""
        try:
            await self.store.run(self.manager.release_call(pending.request, pending.entry_id, pending.token, 0))
        except StoreError:
            pass
        self.waiters.wake(pending.entry_id)
