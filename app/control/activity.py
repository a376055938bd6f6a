"""Who sends the most requests, fleet-wide: the status page's busiest clients.

A pipeline stage that costs no round trip: it counts each request's client in replica memory (in
``admission_call``, which every request passes, refused or not), and a background task adds the
counts to Redis about once a second (lua/activity_add.lua), in two rolling windows. Reading the
busiest clients (lua/activity_top.lua) gives the requests of the last one to two windows. The
scripts' keys, arguments and replies: app/control/activity_protocol.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from app.background import stop_tasks
from app.control.activity_protocol import ClientRequests, activity_keys, add_call, top_call, top_reply
from app.pipeline.exchange import Exchange
from app.pipeline.stage import Stage
from app.routing.router import Route
from app.store import ScriptCall, Store, StoreError

log = logging.getLogger("apigw.activity")

WINDOW_SECONDS = 60
KEEP_CLIENTS = 1000   # per window in Redis: memory bounded whatever ids clients claim
LOCAL_CLIENTS = 10_000  # per flush in a replica, for the same reason
FLUSH_SECONDS = 1.0


def client_of(ex: Exchange) -> str:
    """The rate limiter names the client when it runs (API key, X-Client-ID or address); without
    it, the same convention minus API keys."""
    if ex.client_id:
        return ex.client_id
    claimed = ex.header(b"x-client-id")
    if claimed:
        return claimed.decode("latin-1")[:200]
    return f"ip:{ex.client_addr}"


class ClientActivity(Stage):
    name = "activity"

    def __init__(self, store: Store, window: int = WINDOW_SECONDS, flush_every: float = FLUSH_SECONDS) -> None:
        self.store = store
        self.window = window
        self.flush_every = flush_every
        self.pending: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.keys = activity_keys(store)

    # -- the pipeline -------------------------------------------------------------------------

    def admission_call(self, ex: Exchange, route: Route | None) -> ScriptCall | None:
        client = ex.client_id or client_of(ex)
        if len(self.pending) < LOCAL_CLIENTS or client in self.pending:
            self.pending[client] += 1
        return None

    # -- the shared counts --------------------------------------------------------------------

    def add_call(self, counts: Counter[str]) -> ScriptCall:
        return add_call(self.keys, self.window, KEEP_CLIENTS, counts)

    async def flush(self) -> None:
        """Add what this replica counted since the last flush; kept for the next one if the store
        cannot take it now."""
        if not self.pending:
            return
        counts, self.pending = self.pending, Counter()
        try:
            await self.store.run(self.add_call(counts))
        except StoreError as error:
            log.debug("client activity not flushed: %s", error)
            for client, count in counts.items():
                if len(self.pending) < LOCAL_CLIENTS or client in self.pending:
                    self.pending[client] += count

    async def busiest(self, many: int = 10) -> list[ClientRequests]:
        return top_reply((await self.store.run(top_call(self.keys, self.window, many)))[0])

    async def _flush_loop(self) -> None:
        # The flag as well as the cancel: redis-py can turn a cancellation that lands inside a read
        # into a TimeoutError, which the except below would otherwise take for a failed flush.
        while not self._closing:
            await asyncio.sleep(self.flush_every)
            try:
                await self.flush()
            except Exception:  # never let the loop die: the page would go quiet
                if not self._closing:
                    log.exception("client activity flush failed")

    async def start(self) -> None:
        self._closing = False
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def close(self) -> None:
        self._closing = True
        await stop_tasks([self._task])
        self._task = None
        with contextlib.suppress(Exception):
            await self.flush()
