"""Active health checks: each target of a route with ``health_check`` is probed every interval.

One replica per route does the probing (it holds ``lua/health_claim.lua``'s lease and renews it
each round); its results go through ``lua/health_report.lua``, which applies the healthy/unhealthy
thresholds and keeps the fleet's verdict in one hash per route. A change is announced on the
``health`` channel; every replica also re-reads the hash each interval and after a reconnect, so
one replica's checks serve all. The load balancer skips unhealthy targets (``set_healthy``).

With the store unreachable, every replica probes for itself and decides on local state (the same
scripts' twins on a private MemoryDB), so a dead target is still skipped. The scripts' keys,
arguments and replies, and the verdict messages: app/breaker/health_protocol.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from app.background import stop_tasks
from app.breaker.health_protocol import (claim_call, decode_verdict, encode_verdict, health_keys, report_call,
                                         report_reply, verdicts_of)
from app.observability.metrics import HEALTH_CHECKS
from app.routing.router import ApiGatewayRouter, Route
from app.store import MemoryDB, Store, StoreError, StoreUnavailable
from app.store.scripts import health_report

log = logging.getLogger("apigw.health")


class HealthChecker:
    def __init__(self, router: ApiGatewayRouter, store: Store,
                 session: Callable[[], aiohttp.ClientSession],
                 tls: Callable[[Route], ssl.SSLContext | bool] = lambda route: True) -> None:
        self.router = router
        self.store = store
        self.session = session
        # How a route's https:// targets are verified: as its requests are (the route's ca, client_cert).
        self.tls = tls
        self.owner = uuid.uuid4().hex[:12]
        self.channel = store.channel("health")
        self._due: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._local = MemoryDB()  # decisions while the store is unreachable
        self._task: asyncio.Task[None] | None = None
        store.subscribe(self.channel, self._on_event)
        store.on_reconnect(self.refresh_all)

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            await self.refresh_all()
            self._task = asyncio.create_task(self._loop(), name="apigw-health-checks")

    async def close(self) -> None:
        self.store.unsubscribe(self.channel, self._on_event)
        self.store.forget_reconnect(self.refresh_all)
        await stop_tasks([self._task, *self._running.values()])
        self._task = None
        self._running.clear()

    async def _loop(self) -> None:
        while True:
            now = time.monotonic()
            wake = now + 0.5  # routes added through the admin API are noticed this soon
            for route in self.router.routes:
                spec = route.spec.health_check
                if spec is None or not route.enabled:
                    continue
                due = self._due.get(route.key, 0.0)
                if now >= due:
                    due = self._due[route.key] = now + spec.interval
                    running = self._running.get(route.key)
                    if running is None or running.done():  # a slow round is not doubled
                        self._running[route.key] = asyncio.create_task(self._guarded_round(route))
                wake = min(wake, due)
            await asyncio.sleep(max(0.01, wake - time.monotonic()))

    # -- one round for one route ----------------------------------------------------------------

    async def _guarded_round(self, route: Route) -> None:
        try:
            await self._round(route)
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad round must not stop the checks
            log.exception("health check round failed for %s", route.key)

    async def _round(self, route: Route) -> None:
        spec = route.spec.health_check
        assert spec is not None
        keys = health_keys(self.store, route.key)
        try:
            leader = bool((await self.store.run(claim_call(keys, self.owner, int(spec.interval * 3000))))[0])
            shared = True
        except StoreUnavailable:
            leader, shared = True, False
        if not leader:
            await self._refresh(route)
            return
        targets = list(route.balancer.targets)
        results = await asyncio.gather(*(self._probe(route, t.url) for t in targets))
        calls = [report_call(keys, t.url, ok, spec.healthy_threshold, spec.unhealthy_threshold)
                 for t, ok in zip(targets, results, strict=True)]
        replies: list[Any] | None = None
        if shared:
            try:
                replies = await self.store.run(*calls)
            except StoreUnavailable:
                replies = None
        if replies is None:
            replies = [health_report.run(self._local, list(call.keys), list(call.args)) for call in calls]
        for target, reply in zip(targets, replies, strict=True):
            verdict = report_reply(reply)
            self._apply(route.key, target.url, verdict.healthy)
            if verdict.changed and shared:
                with contextlib.suppress(StoreUnavailable):
                    await self.store.publish(self.channel, encode_verdict(route.key, target.url, verdict.healthy))

    async def _probe(self, route: Route, url: str) -> bool:
        spec = route.spec.health_check
        assert spec is not None
        try:
            async with self.session().get(url + spec.path, allow_redirects=False, ssl=self.tls(route),
                                          timeout=aiohttp.ClientTimeout(total=spec.timeout)) as answer:
                ok = 200 <= answer.status < 400
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            ok = False
        HEALTH_CHECKS.labels(url, "healthy" if ok else "unhealthy").inc()
        return ok

    # -- what the fleet found -------------------------------------------------------------------

    def _apply(self, route_key: str, url: str, healthy: bool) -> None:
        route = self.router.route_manager.get(route_key)
        if route is None:
            return
        for target in route.balancer.targets:
            if target.url == url and target.healthy != healthy:
                log.warning("target %s of %s is now %s", url, route_key, "healthy" if healthy else "unhealthy")
        route.balancer.set_healthy(url, healthy)

    def _on_event(self, message: bytes) -> None:
        try:
            event = decode_verdict(message)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed health event: %r", message[:200])
            return
        self._apply(event.route_key, event.url, event.healthy)

    async def _refresh(self, route: Route) -> None:
        try:
            fields = await self.store.hgetall(health_keys(self.store, route.key).verdicts)
        except StoreError:  # unreachable, or not a hash: keep what we know
            return
        for url, healthy in verdicts_of(fields, [t.url for t in route.balancer.targets]).items():
            self._apply(route.key, url, healthy)

    async def refresh_all(self) -> None:
        """At start and after a reconnect: take the fleet's verdicts for every checked route."""
        for route in self.router.routes:
            if route.spec.health_check is not None:
                await self._refresh(route)
