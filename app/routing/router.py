"""Routing: which route a request belongs to, and which target of it serves the request.

Routes are compiled into a segment trie when they change, so a lookup walks the request path once
instead of trying every route. The most specific route wins: a literal segment beats a parameter
(``/a/me`` before ``/a/{id}``), a full match beats a prefix (``/a/*``), a longer prefix beats a
shorter one, a named method beats ``*``.

Routes may also name a ``host`` and ``headers``. The precedence is: host first (the routes of the
request's exact host, then those of the longest matching ``*.suffix``, then the routes without a
host: a host's routes are a table of their own, and the next table is tried only when nothing in
it matches the path); then path specificity as above; then header conditions (at one path, a route
whose header conditions all hold beats one without conditions, more conditions first); then the
method. A table without host or header conditions is matched exactly as before, without looking at
the request's headers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from app.config import RouteSpec, TargetSpec

ANY_METHOD = "*"

# What the router's owner compiles from a route's spec to serve it (the pipeline's
# app.pipeline.compiled.CompiledRoute). The router carries it without knowing it, so routing stays
# below the pipeline that reads it.
Compiled = TypeVar("Compiled")


class RequestHead(Protocol):
    """What the router reads of a request besides its path and method (the Exchange has it)."""

    def header(self, name: bytes) -> bytes | None: ...


def request_host(request: RequestHead) -> str:
    """The Host header's name, lower case and without its port ("" without one)."""
    raw = request.header(b"host")
    if not raw:
        return ""
    host = raw.decode("latin-1").lower()
    if host.startswith("["):  # an IPv6 literal: its colons are not the port's
        return host[:host.find("]") + 1]
    return host.partition(":")[0]


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
    # The spec's header conditions as the request carries them: (name, value), value None for
    # "present".
    conditions: tuple[tuple[bytes, bytes | None], ...] = field(init=False)

    def __post_init__(self) -> None:
        self.key = self.spec.key
        self.methods = self.spec.methods
        self.conditions = tuple((name.encode("latin-1"), None if value is True else value.encode("latin-1"))
                                for name, value in sorted(self.spec.headers.items()))

    def conditions_hold(self, request: RequestHead) -> bool:
        for name, value in self.conditions:
            found = request.header(name)
            if found is None or (value is not None and found != value):
                return False
        return True

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
    __slots__ = ("literal", "param", "routes", "prefix_routes", "guarded", "guarded_prefix")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.routes: dict[str, Route] = {}  # method -> route ending here
        self.prefix_routes: dict[str, Route] = {}  # method -> prefix route ending here
        # Routes ending here with header conditions, tried before ``routes`` (``prefix_routes``):
        # more conditions first, then a named method before "*", then in config order.
        self.guarded: list[Route] = []
        self.guarded_prefix: list[Route] = []


def _pick(by_method: dict[str, Route], method: str) -> Route | None:
    route = by_method.get(method) or by_method.get(ANY_METHOD)
    if route is None and method == "HEAD":
        route = by_method.get("GET")  # a GET route answers HEAD, as every HTTP server does
    return route


def _pick_guarded(guarded: list[Route], method: str, request: RequestHead | None) -> Route | None:
    if request is None:
        return None
    for route in guarded:
        methods = route.methods
        if (method in methods or ANY_METHOD in methods or (method == "HEAD" and "GET" in methods)) \
                and route.conditions_hold(request):
            return route
    return None


def _guard_order(route: Route) -> tuple[int, bool]:
    return (-len(route.conditions), ANY_METHOD in route.methods)


class _Table:
    """The routes of one host (or of none) compiled into a trie, and its paths without parameters."""

    __slots__ = ("root", "static")

    def __init__(self, routes: Iterable[Route]) -> None:
        root = _Node()
        for route in routes:
            node = root
            for segment in route.segments:
                if segment.startswith("{") and segment.endswith("}"):
                    node.param = node.param or _Node()
                    node = node.param
                else:
                    node = node.literal.setdefault(segment, _Node())
            if route.conditions:
                (node.guarded_prefix if route.is_prefix else node.guarded).append(route)
                continue
            table = node.prefix_routes if route.is_prefix else node.routes
            for method in route.methods:
                table.setdefault(method, route)  # the first route configured for a slot wins
        _sort_guards(root)
        # Paths without parameters, as written ("/a/b"): one dict lookup finds what the trie walk
        # would find first there, the route ending at that node (most requests go to such paths).
        static: dict[str, dict[str, Route]] = {}
        _collect_static(root, "", static)
        self.root, self.static = root, static


def _sort_guards(node: _Node) -> None:
    node.guarded.sort(key=_guard_order)
    node.guarded_prefix.sort(key=_guard_order)
    for child in node.literal.values():
        _sort_guards(child)
    if node.param is not None:
        _sort_guards(node.param)


def _collect_static(node: _Node, path: str, into: dict[str, dict[str, Route]]) -> None:
    # A node with guarded routes is left to the walk, which tries them first.
    if node.routes and not node.guarded:
        into[path or "/"] = node.routes
    for segment, child in node.literal.items():
        _collect_static(child, f"{path}/{segment}", into)


def _match_in(table: _Table, path: str, method: str, request: RequestHead | None) -> RouteMatch | None:
    static = table.static.get(path)
    if static is not None:
        route = _pick(static, method)
        if route is not None:
            return RouteMatch(route, {})
    segments = [s for s in path.split("/") if s]
    route = _walk(table.root, segments, 0, method, request)
    if route is None:
        return None
    params: dict[str, str] = {}
    for i, pattern in enumerate(route.segments):
        if pattern[0] == "{":
            params[pattern[1:-1]] = segments[i]
    return RouteMatch(route, params)


def _walk(node: _Node, segments: list[str], depth: int, method: str, request: RequestHead | None) -> Route | None:
    if depth == len(segments):
        if node.guarded:
            guarded = _pick_guarded(node.guarded, method, request)
            if guarded is not None:
                return guarded
        exact = _pick(node.routes, method)
        if exact is not None:
            return exact
        return _pick_prefix(node, method, request)
    child = node.literal.get(segments[depth])
    if child is not None:
        found = _walk(child, segments, depth + 1, method, request)
        if found is not None:
            return found
    if node.param is not None:
        found = _walk(node.param, segments, depth + 1, method, request)
        if found is not None:
            return found
    # Nothing deeper matched: a prefix ending here covers the rest of the path.
    return _pick_prefix(node, method, request)


def _pick_prefix(node: _Node, method: str, request: RequestHead | None) -> Route | None:
    if node.guarded_prefix:
        guarded = _pick_guarded(node.guarded_prefix, method, request)
        if guarded is not None:
            return guarded
    return _pick(node.prefix_routes, method) if node.prefix_routes else None


class RouteManager:
    """Holds the routes and their compiled tables; a change rebuilds them and swaps them in."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._table = _Table(())  # the routes without a host
        # Only when some route names a host or headers does a match look at the request.
        self._conditional = False
        self._hosts: dict[str, _Table] = {}
        self._wildcards: list[tuple[str, _Table]] = []  # (".example.com", table), longest first

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
        by_host: dict[str | None, list[Route]] = {}
        for route in self._routes.values():
            if route.enabled:
                by_host.setdefault(route.spec.host, []).append(route)
        table = _Table(by_host.pop(None, ()))
        hosts = {host: _Table(routes) for host, routes in by_host.items() if not host.startswith("*.")}
        wildcards = sorted(((host[1:], _Table(routes)) for host, routes in by_host.items() if host.startswith("*.")),
                           key=lambda pair: -len(pair[0]))
        conditional = bool(by_host) or any(route.conditions for route in self._routes.values())
        self._table, self._hosts, self._wildcards, self._conditional = table, hosts, wildcards, conditional

    def match(self, path: str, method: str, request: RequestHead | None = None) -> RouteMatch | None:
        if self._conditional:
            return self._match_conditional(path, method, request)
        static = self._table.static.get(path)
        if static is not None:
            route = _pick(static, method)
            if route is not None:
                return RouteMatch(route, {})
        return _match_in(self._table, path, method, None)

    def _match_conditional(self, path: str, method: str, request: RequestHead | None) -> RouteMatch | None:
        host = request_host(request) if request is not None and (self._hosts or self._wildcards) else ""
        if host:
            table = self._hosts.get(host)
            if table is not None:
                found = _match_in(table, path, method, request)
                if found is not None:
                    return found
            for suffix, table in self._wildcards:
                if host.endswith(suffix) and len(host) > len(suffix):
                    found = _match_in(table, path, method, request)
                    if found is not None:
                        return found
        return _match_in(self._table, path, method, request)


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

    def match(self, path: str, method: str, request: RequestHead | None = None) -> RouteMatch[Compiled] | None:
        """The route for ``method path``; ``request`` gives the Host and header fields that routes
        with host or header conditions need (without it, no such condition holds)."""
        if not self.enabled:
            return None
        return self.route_manager.match(path, method.upper(), request)

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
