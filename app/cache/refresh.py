"""Fetching an entry anew in the background: stale-while-revalidate, and the warmer's fetches.

The fetch goes through the orchestrator (``forward``: the route's target, retries and timeouts),
with the fill lock already held by this replica; its answer is stored as a request's would be.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app.cache.conditional import CLIENT_CONDITIONS
from app.cache.fill import Filler
from app.cache.pending import Pending
from app.cache.protocol import is_store
from app.cache.tee import TeeResponse
from app.pipeline.exchange import Exchange, Reply, new_request_id
from app.routing.router import Route

log = logging.getLogger("apigw.cache")

Forward = Callable[[Exchange, Route], Awaitable[Reply]]

# The client's request fields a refresh does not copy: it fetches the whole answer for everyone,
# not this client's range or the answer to its own preconditions (a 206, a 304 or a 412 would
# store nothing, and mark the key as one whose answers cannot be kept).
_NOT_REFRESHED = frozenset({b"content-length", b"range", *CLIENT_CONDITIONS})


class Refresher:
    def __init__(self, forward: Forward, filler: Filler) -> None:
        self.forward = forward
        self.filler = filler

    async def fetch_and_store(self, ex: Exchange, route: Route, pending: Pending) -> bool:
        """Whether the answer was stored."""
        ex.read_body_up_to = self.filler.settings.max_body_size
        reply = await self.forward(ex, route)
        store_reply: Any = None
        try:
            call = self.filler.completion(pending, reply)
            if call is not None:
                store_reply = (await self.filler.store.run(call))[0]
                return is_store(call)
            if isinstance(reply.stream, TeeResponse):
                return await reply.stream.drain()  # stored by the copy on release
            return False
        finally:
            if reply.stream is not None:
                reply.stream.release()
            self.filler.landed(pending, store_reply)

    async def refresh(self, ex: Exchange, route: Route, pending: Pending) -> None:
        """Stale-while-revalidate: this replica holds the lock; fetch anew and store."""
        again = Exchange(method="GET", path=ex.path, raw_path=ex.raw_path, query_string=ex.query_string,
                         headers=[(n, v) for n, v in ex.headers if n not in _NOT_REFRESHED],
                         client_addr=ex.client_addr, scheme=ex.scheme, request_id=new_request_id())
        fresh = Pending(pending.request, pending.entry_id, pending.base_id, pending.names, pending.token,
                        holds_lock=True)
        try:
            await self.fetch_and_store(again, route, fresh)
        except Exception:  # a background refresh must never take the replica down
            log.exception("background refresh of %s failed", ex.path)
