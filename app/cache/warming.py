"""Warming: the ``cache.warm`` paths are fetched before anyone asks, and again before they expire.

Every replica runs the loop; the lookup's warm mode (lua/cache_get.lua) lets one of them take the
fill lock when an entry is missing or has less than a tenth of its lifetime left, so each path is
fetched once for the fleet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from app.cache.manager import ApiCacheManager, new_token
from app.cache.pending import Pending, cache_request
from app.cache.protocol import DUE, FRESH, WARM, lookup_reply
from app.cache.refresh import Refresher
from app.cache.vary_hints import VaryHints
from app.pipeline.exchange import Exchange, new_request_id
from app.routing.router import Route
from app.store import StoreError

log = logging.getLogger("apigw.cache")

# Warmed entries are fetched again when less than this share (per mille) of their lifetime is left.
MARGIN = 100


class CacheWarmer:
    def __init__(self, manager: ApiCacheManager, refresher: Refresher, hints: VaryHints,
                 match: Callable[[str, str], Route | None] | None) -> None:
        self.manager = manager
        self.settings = manager.settings
        self.refresher = refresher
        self.hints = hints
        self.match = match

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = {path: 0.0 for path in self.settings.warm}
        while True:
            for path, when in list(due.items()):
                if when <= loop.time():
                    try:
                        due[path] = loop.time() + await self.warm(path)
                    except Exception:
                        log.exception("warming %s failed", path)
                        due[path] = loop.time() + 5.0
            await asyncio.sleep(max(0.05, min(due.values()) - loop.time()))

    async def warm(self, target: str) -> float:
        """Fetch ``target`` when it is missing or about to expire (one replica does, by the lock);
        answers the seconds until it should be looked at again."""
        path, _, query = target.partition("?")
        route = self.match(path, "GET") if self.match is not None else None
        if route is None or not route.spec.cache.enabled:
            log.warning("cache.warm: no caching GET route for %s", target)
            return 60.0
        if route.compiled.transform is not None:
            log.warning("cache.warm: %s is on a route with a transform; not warmed", target)
            return 3600.0
        ex = Exchange(method="GET", path=path, raw_path=path.encode(), query_string=query.encode(),
                      headers=[(b"host", b"apigw-warm")], client_addr="127.0.0.1", request_id=new_request_id())
        request = cache_request(ex, route)
        strategy = self.manager.strategy
        base_id = strategy.cache_key(request)
        names = self.hints.get(base_id, ())
        pending = Pending(request, strategy.cache_key(request, names) if names else base_id, base_id,
                          names, new_token())
        call = self.manager.lookup_call(request, pending.entry_id, base_id, names, WARM, pending.token, MARGIN)
        try:
            reply = lookup_reply((await self.manager.store.run(call))[0])
        except StoreError:
            return 1.0
        if reply.code == FRESH:
            fresh_ms, stored_ms = reply.times.fresh_ms, reply.times.stored_ms
            due_ms = fresh_ms - (fresh_ms - stored_ms) * MARGIN // 1000
            return max(0.05, (due_ms - reply.now_ms) / 1000)
        if reply.code == DUE and reply.locked:
            pending.holds_lock = True
            if await self.refresher.fetch_and_store(ex, route, pending):
                return 0.2  # look again: the next peek knows the stored entry's expiry
            log.warning("cache.warm: the answer for %s could not be kept", target)
            return float(route.spec.cache.ttl or self.settings.ttl)
        return 1.0  # another replica is refreshing it
