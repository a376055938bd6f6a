"""Prometheus metrics: every family the gateway exports, in one place (served at /_gateway/metrics).

Names follow Prometheus conventions: ``apigw_<what>_total`` for counters, ``_seconds`` for durations.
Label values are route keys and outcomes, never client ids (unbounded cardinality).
"""

from __future__ import annotations

import time
import weakref
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# The upper bounds as prometheus_client's Histogram keeps them (+Inf last), and their "le" labels.
_BOUNDS = (*(float(b) for b in _LATENCY_BUCKETS), INF)
_LE = tuple(floatToGoString(b) for b in _BOUNDS)


def _use_created() -> bool:
    """Whether prometheus_client exports ``_created`` series (PROMETHEUS_DISABLE_CREATED_SERIES,
    disable_created_metrics()): asked of a counter of its own, as its switch is not public. Once a
    scrape, never per request."""
    (family,) = Counter("apigw_created_probe", "", registry=None).collect()
    return any(sample.name.endswith("_created") for sample in family.samples)


class _RouteSeries:
    """One route's request counts by status and its two histograms, shared by every RouteMetrics
    made for that route key (a route recompiled after a config change counts on)."""

    __slots__ = ("by_status", "overhead", "backend", "created")

    def __init__(self) -> None:
        self.by_status: dict[int, list[float]] = {}
        # A count per bucket (not cumulative: an observation adds to one cell), then the sum.
        self.overhead = [0.0] * (len(_BOUNDS) + 1)
        self.backend = [0.0] * (len(_BOUNDS) + 1)
        self.created = time.time()


class _RouteCollector(Collector):
    """apigw_requests_total, apigw_gateway_overhead_seconds and apigw_backend_duration_seconds,
    exposed exactly as prometheus_client's Counter and Histograms would (samples, labels, order,
    ``_created``), but counted in plain lists: prometheus_client takes a lock per value and walks the
    buckets in Python, for three values per request. Counted and scraped on the event loop."""

    def __init__(self) -> None:
        self.routes: dict[str, _RouteSeries] = {}
        # (route, status) -> ([count], time of the first): in creation order, as Counter lists them.
        self.requests: dict[tuple[str, str], tuple[list[float], float]] = {}

    def series(self, route: str) -> _RouteSeries:
        found = self.routes.get(route)
        if found is None:
            found = self.routes[route] = _RouteSeries()
        return found

    def counter(self, route: str, status: int) -> list[float]:
        key = (route, str(status))
        found = self.requests.get(key)
        if found is None:
            found = self.requests[key] = ([0.0], time.time())
        return found[0]

    def describe(self) -> list[Metric]:
        return [Metric("apigw_requests", "Requests answered, by route and status", "counter"),
                Metric("apigw_gateway_overhead_seconds",
                       "Time spent in the gateway itself (request duration minus backend time)", "histogram"),
                Metric("apigw_backend_duration_seconds",
                       "Time from sending a request to a backend to its response headers "
                       "(and its body, when the gateway reads it whole)", "histogram")]

    def collect(self) -> Iterable[Metric]:
        created = _use_created()
        requests, overhead, backend = self.describe()
        for (route, status), (cell, since) in list(self.requests.items()):
            labels = {"route": route, "status": status}
            requests.add_sample("apigw_requests_total", labels, cell[0])
            if created:
                requests.add_sample("apigw_requests_created", labels, since)
        yield requests
        routes = list(self.routes.items())
        for family in (overhead, backend):
            name = family.name
            for route, series in routes:
                cells = series.overhead if family is overhead else series.backend
                acc = 0.0
                for le, count in zip(_LE, cells, strict=False):
                    acc += count
                    family.add_sample(name + "_bucket", {"route": route, "le": le}, acc)
                family.add_sample(name + "_count", {"route": route}, acc)
                family.add_sample(name + "_sum", {"route": route}, cells[-1])
                if created:
                    family.add_sample(name + "_created", {"route": route}, series.created)
            yield family


_ROUTES = _RouteCollector()
REGISTRY.register(_ROUTES)

RATE_LIMITED = Counter("apigw_rate_limited_total", "Requests refused by a rate limit", ["route"],
                       registry=REGISTRY)
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


class _PlainCounter(Collector):
    """A labelled counter exposed as prometheus_client's Counter would be (``_total``, ``_created``),
    counted in one-float cells the request path keeps: ``cell(...)[0] += 1`` with no lock (counted
    and scraped on the event loop)."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.cells: dict[tuple[str, ...], tuple[list[float], float]] = {}

    def cell(self, *values: str) -> list[float]:
        found = self.cells.get(values)
        if found is None:
            found = self.cells[values] = ([0.0], time.time())
        return found[0]

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "counter")]

    def collect(self) -> Iterable[Metric]:
        created = _use_created()
        (family,) = self.describe()
        for values, (cell, since) in list(self.cells.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            family.add_sample(self.name + "_total", labels, cell[0])
            if created:
                family.add_sample(self.name + "_created", labels, since)
        yield family


AUTH_OUTCOMES = _PlainCounter("apigw_auth", "Authentications on routes with auth, by route, method and outcome "
                              "(ok, missing, invalid, forbidden)", ("route", "method", "outcome"))
REGISTRY.register(AUTH_OUTCOMES)
# Counted on every cached route's request: a cell, not a Counter's labelled child (its lock and checks).
CACHE_LOOKUPS = _PlainCounter("apigw_cache_lookups", "Cache lookups by result (hit, miss, stale, bypass)",
                              ("route", "result"))
REGISTRY.register(CACHE_LOOKUPS)
# A fill's store that the store refused: a write purged its URI meanwhile (on any replica), or its
# lock expired and another fill took the key over. Rare, and counted only then.
CACHE_STORES_REFUSED = _PlainCounter("apigw_cache_stores_refused",
                                     "Stores of a cache fill refused because a write purged the URI, or "
                                     "another fill took the key over, after the lookup", ("route",))
REGISTRY.register(CACHE_STORES_REFUSED)


class RouteMetrics:
    """One route's series, found once: the proxy keeps one in ``Route.compiled.metrics``."""

    __slots__ = ("route", "_by_status", "_overhead", "_backend")

    def __init__(self, route: str) -> None:
        self.route = route
        series = _ROUTES.series(route)
        self._by_status = series.by_status
        self._overhead = series.overhead
        self._backend = series.backend

    def observe(self, status: int, seconds: float, backend_seconds: float) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = _ROUTES.counter(self.route, status)
        counter[0] += 1.0
        if backend_seconds > 0:
            cells = self._backend
            # The first bucket whose upper bound is >= the value, the one Histogram.observe picks.
            cells[bisect_left(_BOUNDS, backend_seconds)] += 1.0
            cells[-1] += backend_seconds
            seconds -= backend_seconds
            if seconds < 0.0:
                seconds = 0.0
        cells = self._overhead
        cells[bisect_left(_BOUNDS, seconds)] += 1.0
        cells[-1] += seconds


# Requests that matched no route (404s, and what a stage refused before routing mattered).
NO_ROUTE = RouteMetrics("(none)")
# Requests the client-side protocol answered itself before routing (400, 408, 414, 431, 501, 503, 505).
EDGE_REFUSED = RouteMetrics("(edge)")


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
