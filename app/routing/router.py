"""Routing: which route a request belongs to, and which target of it serves the request.

Routes are compiled into a segment trie when they change, so a lookup walks the request path once
instead of trying every route. The most specific route wins: a literal segment beats a parameter
(``/a/me`` before ``/a/{id}``), a full match beats a prefix (``/a/*``), a longer prefix beats a
shorter one, a named method beats ``*``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.config import RouteSpec, TargetSpec

ANY_METHOD = "*"

# What the router's owner compiles from a route's spec to serve it (the pipeline's
# app.pipeline.compiled.CompiledRoute). The router carries it without knowing it, so routing stays
# below the pipeline that reads it.
Compiled = TypeVar("Compiled")


@dataclass(eq=False)
class Target:
    url: str
    weight: int
    healthy: bool = True
    # Smooth weighted round-robin state (nginx's ngx_http_upstream_get_peer).
    current_weight: int = 0


class LoadBalancer:
    """Smooth weighted round-robin over a route's healthy targets.

    Each pick adds every target's weight to its running score, takes the highest and subtracts the
    total from it, so 3:1 gives a, a, b, a: the weights hold in every window, not only on average.
    """

    def __init__(self, targets: Iterable[Target]) -> None:
        self.targets = list(targets)
        self._lock = threading.Lock()  # the library API may be used from threads

    def next_target(self, exclude: Collection[str] = ()) -> Target | None:
        """The next healthy target, skipping the URLs in ``exclude`` (e.g. those whose circuit is open)."""
        targets = self.targets
        if len(targets) == 1 and not exclude:  # most routes: the rotation would always pick it
            only = targets[0]
            return only if only.healthy and only.weight > 0 else None
        with self._lock:
            best: Target | None = None
            total = 0
            for target in self.targets:
                if not target.healthy or target.weight <= 0 or target.url in exclude:
                    continue
                target.current_weight += target.weight
                total += target.weight
                if best is None or target.current_weight > best.current_weight:
                    best = target
            if best is not None:
                best.current_weight -= total
            return best

    def set_healthy(self, url: str, healthy: bool) -> None:
        for target in self.targets:
            if target.url == url:
                target.healthy = healthy


@dataclass(eq=False)
class Route(Generic[Compiled]):
    """A compiled route: its config, its targets' balancer, and what its router's owner compiled from it."""

    spec: RouteSpec
    balancer: LoadBalancer
    # Literal segments, and "{name}" for parameters; "*" last for a prefix route.
    segments: tuple[str, ...]
    is_prefix: bool
    # Made once from the spec by the router's ``compile`` when the route is built, read per request;
    # never set on a router without one (a library router that only matches).
    compiled: Compiled = field(init=False, repr=False)
    # The spec's key and methods, which it computes on each access (read several times per request).
    key: str = field(init=False)
    methods: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.key = self.spec.key
        self.methods = self.spec.methods

    @classmethod
    def from_spec(cls, spec: RouteSpec) -> Route[Any]:
        segments = tuple(s for s in spec.path.split("/") if s)
        is_prefix = bool(segments) and segments[-1] == "*"
        if is_prefix:
            segments = segments[:-1]
        targets = [Target(t.url, t.weight) for t in spec.targets]
        return cls(spec, LoadBalancer(targets), segments, is_prefix)

    @property
    def path(self) -> str:
        return self.spec.path

    @property
    def enabled(self) -> bool:
        return self.spec.enabled

    @property
    def prefix(self) -> str:
        """The literal part a prefix route strips when ``strip_prefix`` is on."""
        return "/" + "/".join(self.segments) if self.segments else ""


@dataclass(frozen=True, slots=True)
class RouteMatch(Generic[Compiled]):
    route: Route[Compiled]
    params: dict[str, str]


class _Node:
    __slots__ = ("literal", "param", "routes", "prefix_routes")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.routes: dict[str, Route] = {}  # method -> route ending here
        self.prefix_routes: dict[str, Route] = {}  # method -> prefix route ending here


def _pick(by_method: dict[str, Route], method: str) -> Route | None:
    route = by_method.get(method) or by_method.get(ANY_METHOD)
    if route is None and method == "HEAD":
        route = by_method.get("GET")  # a GET route answers HEAD, as every HTTP server does
    return route


class RouteManager:
    """Holds the routes and their compiled trie; a change rebuilds the trie and swaps it in."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._root = _Node()
        # Paths without parameters, as written ("/a/b"): one dict lookup finds what the trie walk
        # would find first there, the route ending at that node (most requests go to such paths).
        self._static: dict[str, dict[str, Route]] = {}

    @property
    def routes(self) -> list[Route]:
        return list(self._routes.values())

    def get(self, key: str) -> Route | None:
        return self._routes.get(key)

    def put(self, route: Route) -> None:
        self._routes[route.key] = route
        self._compile()

    def remove(self, key: str) -> Route | None:
        route = self._routes.pop(key, None)
        if route is not None:
            self._compile()
        return route

    def replace_all(self, routes: Iterable[Route]) -> None:
        self._routes = {route.key: route for route in routes}
        self._compile()

    def _compile(self) -> None:
        root = _Node()
        for route in self._routes.values():
            if not route.enabled:
                continue
            node = root
            for segment in route.segments:
                if segment.startswith("{") and segment.endswith("}"):
                    node.param = node.param or _Node()
                    node = node.param
                else:
                    node = node.literal.setdefault(segment, _Node())
            table = node.prefix_routes if route.is_prefix else node.routes
            for method in route.methods:
                table.setdefault(method, route)  # the first route configured for a slot wins
        static: dict[str, dict[str, Route]] = {}
        self._collect_static(root, "", static)
        self._root, self._static = root, static

    def _collect_static(self, node: _Node, path: str, into: dict[str, dict[str, Route]]) -> None:
        if node.routes:
            into[path or "/"] = node.routes
        for segment, child in node.literal.items():
            self._collect_static(child, f"{path}/{segment}", into)

    def match(self, path: str, method: str) -> RouteMatch | None:
        static = self._static.get(path)
        if static is not None:
            route = _pick(static, method)
            if route is not None:
                return RouteMatch(route, {})
        segments = [s for s in path.split("/") if s]
        found = self._walk(self._root, segments, 0, method)
        if found is None:
            return None
        route = found
        params: dict[str, str] = {}
        for i, pattern in enumerate(route.segments):
            if pattern[0] == "{":
                params[pattern[1:-1]] = segments[i]
        return RouteMatch(route, params)

    def _walk(self, node: _Node, segments: list[str], depth: int, method: str) -> Route | None:
        if depth == len(segments):
            exact = _pick(node.routes, method)
            if exact is not None:
                return exact
            return _pick(node.prefix_routes, method)
        child = node.literal.get(segments[depth])
        if child is not None:
            found = self._walk(child, segments, depth + 1, method)
            if found is not None:
                return found
        if node.param is not None:
            found = self._walk(node.param, segments, depth + 1, method)
            if found is not None:
                return found
        # Nothing deeper matched: a prefix ending here covers the rest of the path.
        return _pick(node.prefix_routes, method) if node.prefix_routes else None


class ApiGatewayRouter(Generic[Compiled]):
    """The seed's router: routes and targets, and the lookups the proxy makes."""

    def __init__(self, routes: Iterable[RouteSpec] = (), enabled: bool = True,
                 compile: Callable[[Route[Compiled]], Compiled] | None = None) -> None:
        self.enabled = enabled
        self.route_manager = RouteManager()
        # Makes each route's ``compiled`` (the pipeline's per-route structures) when it is built.
        self._compile = compile
        # Sections that components add to get_health_status (name -> a call returning its report).
        self.status_reporters: dict[str, Callable[[], Any]] = {}
        self.replace_routes(routes)

    def _build(self, spec: RouteSpec) -> Route[Compiled]:
        route: Route[Compiled] = Route.from_spec(spec)
        if self._compile is not None:
            route.compiled = self._compile(route)
        return route

    def add_route(self, path: str, method: str | list[str] = ANY_METHOD, target: str | None = None,
                  weight: int = 100, **extensions: Any) -> Route[Compiled]:
        """Add a route, or a target to the route already at (path, method): repeated calls with
        several targets make one load-balanced route, as the seed's weighted routing implies."""
        spec = RouteSpec(path=path, method=method, target=target, weight=weight, **extensions)  # type: ignore[arg-type]
        existing = self.route_manager.get(spec.key)
        if existing is not None and target is not None and not extensions:
            urls = {t.url for t in existing.spec.targets}
            if spec.targets[0].url not in urls:
                merged = existing.spec.model_copy(update={
                    "target": None,
                    "targets": [*existing.spec.targets, TargetSpec(url=target, weight=weight)]})
                spec = merged
        return self.add(spec)

    def add(self, spec: RouteSpec) -> Route[Compiled]:
        route = self._build(spec)
        self.route_manager.put(route)
        return route

    def remove_route(self, key: str) -> bool:
        return self.route_manager.remove(key) is not None

    def set_route_enabled(self, key: str, enabled: bool) -> bool:
        route = self.route_manager.get(key)
        if route is None:
            return False
        self.add(route.spec.model_copy(update={"enabled": enabled}))
        return True

    def replace_routes(self, specs: Iterable[RouteSpec]) -> None:
        self.route_manager.replace_all(self._build(spec) for spec in specs)

    def sync_routes(self, specs: Iterable[RouteSpec]) -> None:
        """Replace the routes, keeping the compiled Route (its balancer and targets' health) of every
        route whose spec did not change: a config change elsewhere does not reset them."""
        current = {route.key: route for route in self.routes}
        routes = []
        for spec in specs:
            old = current.get(spec.key)
            routes.append(old if old is not None and old.spec == spec else self._build(spec))
        self.route_manager.replace_all(routes)

    @property
    def routes(self) -> list[Route[Compiled]]:
        return self.route_manager.routes

    def match(self, path: str, method: str) -> RouteMatch[Compiled] | None:
        if not self.enabled:
            return None
        return self.route_manager.match(path, method.upper())

    def route_request(self, path: str, method: str) -> str | None:
        """The target URL that should serve ``method path`` now, or None when no route matches."""
        found = self.match(path, method)
        if found is None:
            return None
        target = found.route.balancer.next_target()
        return target.url if target is not None else None

    def get_health_status(self) -> dict[str, Any]:
        """The seed's keys (enabled, routes_count, targets_count), each target's health, and what
        the components in ``status_reporters`` add (the circuit breakers' states)."""
        routes = self.routes
        status: dict[str, Any] = {
            "enabled": self.enabled,
            "routes_count": len(routes),
            "targets_count": len({t.url for r in routes for t in r.balancer.targets}),
            "targets": [{"route": r.key, "url": t.url, "healthy": t.healthy}
                        for r in routes for t in r.balancer.targets],
        }
        for name, report in self.status_reporters.items():
            status[name] = report()
        return status
