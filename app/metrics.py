"""Prometheus metrics: every family the gateway exports, in one place (served at /_gateway/metrics).

Names follow Prometheus conventions: ``apigw_<what>_total`` for counters, ``_seconds`` for durations.
Label values are route keys and outcomes, never client ids (unbounded cardinality).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = Counter("apigw_requests_total", "Requests answered, by route and status",
                   ["route", "status"], registry=REGISTRY)
GATEWAY_OVERHEAD = Histogram("apigw_gateway_overhead_seconds",
                             "Time spent in the gateway itself (request duration minus backend time)",
                             ["route"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
BACKEND_DURATION = Histogram("apigw_backend_duration_seconds",
                             "Time from sending a request to a backend to its response headers "
                             "(and its body, when the gateway reads it whole)",
                             ["route"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
RATE_LIMITED = Counter("apigw_rate_limited_total", "Requests refused by a rate limit", ["route"],
                       registry=REGISTRY)
CACHE_LOOKUPS = Counter("apigw_cache_lookups_total", "Cache lookups by result (hit, miss, stale, bypass)",
                        ["route", "result"], registry=REGISTRY)
CIRCUIT_STATE = Gauge("apigw_circuit_state", "Circuit state as this replica knows it (0 closed, 1 half-open, 2 open)",
                      ["circuit"], registry=REGISTRY)
CIRCUIT_TRANSITIONS = Counter("apigw_circuit_transitions_total", "Circuit state changes seen by this replica",
                              ["circuit", "to_state"], registry=REGISTRY)
STORE_ERRORS = Counter("apigw_store_errors_total", "Store calls that failed, by the component that made them",
                       ["component"], registry=REGISTRY)
UPSTREAM_RETRIES = Counter("apigw_upstream_retries_total", "Retries sent to backends", ["route"],
                           registry=REGISTRY)
HEALTH_CHECKS = Counter("apigw_health_checks_total", "Active health-check probes by result",
                        ["target", "result"], registry=REGISTRY)


class RouteMetrics:
    """One route's labelled children, made once (``labels()`` costs a lock and a dict lookup per
    call): the proxy keeps one in ``Route.compiled["metrics"]``."""

    __slots__ = ("route", "_by_status", "overhead", "backend")

    def __init__(self, route: str) -> None:
        self.route = route
        self._by_status: dict[int, Any] = {}
        self.overhead = GATEWAY_OVERHEAD.labels(route)
        self.backend = BACKEND_DURATION.labels(route)

    def observe(self, status: int, seconds: float, backend_seconds: float) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = REQUESTS.labels(self.route, str(status))
        counter.inc()
        if backend_seconds > 0:
            self.backend.observe(backend_seconds)
            seconds = max(0.0, seconds - backend_seconds)
        self.overhead.observe(seconds)


# Requests that matched no route (404s, and what a stage refused before routing mattered).
NO_ROUTE = RouteMetrics("(none)")


class _StoreRoundTrips(Collector):
    """apigw_store_round_trips_total: the batches the stores sent (each one round trip that a request
    waited for), read from the stores' own counts at scrape time: nothing to do per call."""

    def __init__(self) -> None:
        self.stores: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily("apigw_store_round_trips", "Round trips to the shared store (each a batch "
                                  "of script calls)", value=sum(store.round_trips for store in self.stores))


STORE_ROUND_TRIPS = _StoreRoundTrips()
REGISTRY.register(STORE_ROUND_TRIPS)
