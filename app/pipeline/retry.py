"""Retry policy for calls to backends (the transport, app/edge/upstream.py, knows nothing of it).

A route's ``retry`` settings say how many times an idempotent request is sent again after a
connection error, a timeout or a retryable status, with exponential backoff and full jitter. A
budget keeps retries to a share of the route's requests (plus a small floor per window, so a quiet
route can still retry): when a backend fails for everyone, retries stop instead of multiplying its
load. The budget is per replica, like Envoy's and Finagle's, so it costs no store round trip.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from app.config import RetrySpec
from app.pipeline.exchange import BackendCall, Reply
from app.observability.metrics import UPSTREAM_RETRIES

# RFC 9110 section 9.2.2; POST and PATCH are never retried, whatever the config says.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class RetryBudget:
    """At most ``ratio`` retries per request over a rolling ``window`` (10 buckets), and always
    ``min_retries`` per window."""

    BUCKETS = 10

    def __init__(self, ratio: float, min_retries: int, window: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio = ratio
        self.min_retries = min_retries
        self.width = window / self.BUCKETS
        self.clock = clock
        self._index = [-1] * self.BUCKETS
        self._requests = [0] * self.BUCKETS
        self._retries = [0] * self.BUCKETS

    def _slot(self) -> int:
        index = int(self.clock() / self.width)
        slot = index % self.BUCKETS
        if self._index[slot] != index:
            self._index[slot], self._requests[slot], self._retries[slot] = index, 0, 0
        return slot

    def _totals(self) -> tuple[int, int]:
        oldest = int(self.clock() / self.width) - self.BUCKETS
        requests = retries = 0
        for slot in range(self.BUCKETS):
            if self._index[slot] > oldest:
                requests += self._requests[slot]
                retries += self._retries[slot]
        return requests, retries

    def record_request(self) -> None:
        self._requests[self._slot()] += 1

    def try_spend(self) -> bool:
        requests, retries = self._totals()
        if retries + 1 > max(self.min_retries, self.ratio * requests):
            return False
        self._retries[self._slot()] += 1
        return True


class RetryPolicy:
    def __init__(self, spec: RetrySpec, route_key: str) -> None:
        self.spec = spec
        self.route_key = route_key
        self.methods = frozenset(spec.methods) & IDEMPOTENT_METHODS
        self.statuses = frozenset(spec.statuses)
        self.budget = RetryBudget(spec.budget_ratio, spec.budget_min_retries, spec.budget_window)

    @classmethod
    def for_route(cls, spec: RetrySpec, route_key: str) -> RetryPolicy | None:
        return cls(spec, route_key) if spec.attempts > 0 else None

    def applies(self, method: str, body: Any) -> bool:
        # A streamed body is gone once sent: only a body held whole can be sent again.
        return method in self.methods and (body is None or isinstance(body, bytes))

    def retryable(self, call: BackendCall) -> bool:
        return call.status is None or call.status in self.statuses

    def backoff(self, retry: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^(retry-1))] (AWS architecture blog)."""
        ceiling = min(self.spec.backoff_max, self.spec.backoff_base * (2 ** (retry - 1)))
        return random.uniform(0, ceiling)


Attempt = Callable[[], Awaitable[tuple[Reply, BackendCall | None]]]


async def send_with_retries(policy: RetryPolicy | None, method: str, body: Any, attempt: Attempt,
                            may_continue: Callable[[], bool] | None = None) -> tuple[Reply, BackendCall | None]:
    """Run ``attempt`` once, then again while the policy, its budget and ``may_continue`` (the
    circuit still admits) allow. The last attempt's answer is the request's."""
    reply, call = await attempt()
    if policy is None or not policy.applies(method, body):
        return reply, call
    policy.budget.record_request()
    retry = 0
    while call is not None and retry < policy.spec.attempts and policy.retryable(call):
        if may_continue is not None and not may_continue():
            break
        if not policy.budget.try_spend():
            break
        retry += 1
        if reply.stream is not None:
            reply.stream.release()
        await asyncio.sleep(policy.backoff(retry))
        UPSTREAM_RETRIES.labels(policy.route_key).inc()
        reply, call = await attempt()
    return reply, call
