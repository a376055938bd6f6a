"""The breakers of one process, and how they hear of the fleet's transitions.

A transition is announced on the ``breaker`` channel by the replica whose script made it; the others
adopt it from the message (generations order messages that arrive out of order). After the event
stream was broken, and every few seconds as a safety net, the hashes are re-read in one round trip.
A breaker made after start-up learns the fleet's state before its first admission: in the request's
admission batch (the pipeline's stage), or by one read of its own (``ApiCircuitBreaker.admit``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from app.background import stop_tasks
from app.breaker.breaker import ApiCircuitBreaker, default_is_failure
from app.breaker.fallback import ApiFallbackService
from app.breaker.model import Snapshot
from app.breaker.protocol import decode_event, encode_event
from app.config import CircuitBreakerSpec
from app.store import MemoryStore, ScriptCall, Store, StoreUnavailable

log = logging.getLogger("apigw.breaker")


class CircuitBreakerManager:
    def __init__(self, store: Store | None = None, default_config: CircuitBreakerSpec | None = None,
                 fallback_service: ApiFallbackService | None = None,
                 sync_interval: float = 1.0, resync_every: int = 5) -> None:
        self.store = store or MemoryStore()
        self.default_config = default_config or CircuitBreakerSpec()
        self.fallback_service = fallback_service or ApiFallbackService()
        self.replica_id = uuid.uuid4().hex[:12]
        self.sync_interval = sync_interval
        self.resync_every = resync_every
        self._breakers: dict[str, ApiCircuitBreaker] = {}
        self._task: asyncio.Task[None] | None = None
        self.channel = self.store.channel("breaker")
        self.store.subscribe(self.channel, self._on_event)
        self.store.on_reconnect(self.reconcile)

    # -- the seed's API -------------------------------------------------------------------------

    def get_circuit_breaker(self, endpoint: str, config: CircuitBreakerSpec | None = None) -> ApiCircuitBreaker:
        """The breaker for ``endpoint``, created on first use; a new ``config`` replaces the old."""
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            breaker = ApiCircuitBreaker(endpoint, config or self.default_config, self.store, self.announce,
                                        default_is_failure)
            self._breakers[endpoint] = breaker
        elif config is not None and config != breaker.config:
            breaker.config = config
        return breaker

    @property
    def breakers(self) -> dict[str, ApiCircuitBreaker]:
        return dict(self._breakers)

    def get_all_stats(self) -> dict[str, dict[str, Any]]:
        return {name: breaker.get_stats() for name, breaker in self._breakers.items()}

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            await self.reconcile()
            self._task = asyncio.create_task(self._sync_loop(), name="apigw-breaker-sync")

    async def close(self) -> None:
        self.store.unsubscribe(self.channel, self._on_event)
        self.store.forget_reconnect(self.reconcile)
        await stop_tasks([self._task])
        self._task = None

    # -- events ---------------------------------------------------------------------------------

    async def announce(self, breaker: ApiCircuitBreaker, snap: Snapshot) -> None:
        """Tell the fleet what this replica's script just did."""
        try:
            await self.store.publish(self.channel, encode_event(breaker.name, snap, self.replica_id))
        except StoreUnavailable:
            pass  # the others re-read the hashes when their event stream comes back

    def _on_event(self, message: bytes) -> None:
        try:
            event = decode_event(message)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed breaker event: %r", message[:200])
            return
        breaker = self._breakers.get(event.name)
        if breaker is not None and event.replica_id != self.replica_id:
            breaker.learn_event(event.snapshot)

    # -- re-reading and flushing ----------------------------------------------------------------

    async def reconcile(self) -> None:
        """After the event stream was broken (or at start): re-read every hash, and tell the fleet
        of circuits this replica opened alone while the store was unreachable."""
        local = [b for b in self._breakers.values() if b.local_only]
        for breaker in local:
            await breaker.reconcile()
        await self._read([b for b in self._breakers.values() if b not in local], force=True)

    async def _read(self, breakers: list[ApiCircuitBreaker], force: bool) -> None:
        if not breakers:
            return
        try:
            replies = await self.store.run(*(b.state_call() for b in breakers))
        except StoreUnavailable:
            return
        for breaker, reply in zip(breakers, replies, strict=True):
            if not breaker.local_only:
                breaker.learn_state(reply, force=force)

    async def flush(self) -> None:
        """Write the successes the rate rule is waiting for, in one round trip."""
        pairs: list[tuple[ApiCircuitBreaker, ScriptCall]] = []
        for breaker in self._breakers.values():
            call = breaker.flush_call()
            if call is not None:
                pairs.append((breaker, call))
        if not pairs:
            return
        try:
            replies = await self.store.run(*(call for _, call in pairs))
        except StoreUnavailable:
            return  # these successes are lost: the rate rule errs toward opening for a moment
        for (breaker, call), reply in zip(pairs, replies, strict=True):
            await breaker.outcome_reply(call, reply)

    async def _sync_loop(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(self.sync_interval)
            tick += 1
            try:
                await self.flush()
                if tick % self.resync_every == 0:
                    await self._read([b for b in self._breakers.values() if not b.local_only], force=False)
                    for breaker in [b for b in self._breakers.values() if b.local_only]:
                        await breaker.reconcile()
            except Exception:  # the loop must outlive a bad reply
                log.exception("breaker sync failed")
