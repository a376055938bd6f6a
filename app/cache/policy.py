"""What is cacheable and under which key: ``CacheStrategy`` (the extension point) and the default.

The storage rules of RFC 9111 section 3 come from hishel's sans-IO ``CacheMiss`` state (method,
final status, no-store, private, Authorization, explicit freshness) and its freshness and header
helpers; this module adds what a gateway needs on top (DESIGN.md "Cache"): status allow-list per
route, no-cache responses not stored (we do not revalidate), Vary: * and Set-Cookie not stored,
an Authorization'd request stored only when the response says ``public``, and the TTL rule
min(metadata cache_time, route ttl, s-maxage/max-age minus Age).
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hishel import CacheMiss, CacheOptions, Headers, Request, Response, StoreAndUse
from hishel._core._headers import parse_cache_control
from hishel._core._spec import HEURISTICALLY_CACHEABLE_STATUS_CODES, get_freshness_lifetime

from app.config import CacheSection, RouteCacheSpec

RawHeaders = list[tuple[bytes, bytes]]

_OPTIONS = CacheOptions(shared=True, supported_methods=["GET", "HEAD"], allow_stale=False)
# Never served from a shared store: they describe one exchange, not the resource.
_NOT_STORED_HEADERS = frozenset({b"age", b"x-request-id", b"x-cache", b"set-cookie"})


class Lookup(Enum):
    LOOKUP = "lookup"    # look in the cache, store a miss
    REFRESH = "refresh"  # the client asked for a fresh answer: skip the lookup, store the answer
    BYPASS = "bypass"    # leave the cache alone


@dataclass(slots=True)
class CacheRequest:
    """What a strategy sees of a request."""

    method: str
    route: str
    path: str
    query: bytes = b""
    headers: RawHeaders = field(default_factory=list)
    schema_version: str = ""
    settings: RouteCacheSpec | None = None

    def header(self, name: bytes) -> bytes | None:
        found = [value for key, value in self.headers if key == name]
        return b", ".join(found) if found else None


@dataclass(slots=True)
class StoreDecision:
    """How to keep one response: for how long, under which Vary, with which headers."""

    ttl_ms: int
    grace_ms: int
    swr_ms: int
    vary: tuple[str, ...]
    headers: RawHeaders
    # The Age the response arrived with (seconds): it keeps counting in the cache.
    age: int = 0


class CacheStrategy(abc.ABC):
    """Decides cacheability and the key. A custom strategy subclasses this (or the default)."""

    @abc.abstractmethod
    def lookup(self, request: CacheRequest) -> Lookup:
        """Whether to look the request up, refresh it, or leave the cache alone."""

    @abc.abstractmethod
    def cache_key(self, request: CacheRequest, vary: tuple[str, ...] = ()) -> str:
        """A short id naming the stored variant (``vary``: the response's Vary names)."""

    @abc.abstractmethod
    def storable(self, request: CacheRequest, status: int, headers: RawHeaders,
                 metadata: dict[str, Any] | None = None) -> StoreDecision | None:
        """How to keep the response, or None when it must not be kept."""


def sorted_query(query: bytes) -> bytes:
    """``b=2&a=1`` and ``a=1&b=2`` name the same resource."""
    if not query:
        return b""
    if b"&" not in query:
        return query
    return b"&".join(sorted(part for part in query.split(b"&") if part))


def vary_names(value: str) -> tuple[str, ...]:
    return tuple(sorted({name.strip().lower() for name in value.split(",") if name.strip()}))


class DefaultCacheStrategy(CacheStrategy):
    """DESIGN.md's rules: GET/HEAD, status 200 unless the route lists others, Cache-Control and
    Vary honoured, Authorization only with ``public``; key = method, route, path, sorted query,
    schema version, Vary'd headers (and whether the request was authorized)."""

    def __init__(self, settings: CacheSection | None = None) -> None:
        self.settings = settings or CacheSection()

    # -- lookup ---------------------------------------------------------------------------------

    def lookup(self, request: CacheRequest) -> Lookup:
        if request.method not in ("GET", "HEAD"):
            return Lookup.BYPASS
        control = request.header(b"cache-control")
        if control is None:
            pragma = request.header(b"pragma")
            return Lookup.REFRESH if pragma is not None and b"no-cache" in pragma.lower() else Lookup.LOOKUP
        directives = parse_cache_control(control.decode("latin-1"))
        if directives.no_store:
            return Lookup.BYPASS
        if directives.no_cache or directives.max_age == 0:
            return Lookup.REFRESH
        return Lookup.LOOKUP

    def cache_key(self, request: CacheRequest, vary: tuple[str, ...] = ()) -> str:
        # HEAD is answered from the GET entry (RFC 9110 9.3.2); it is never stored itself.
        method = b"GET" if request.method == "HEAD" else request.method.encode()
        authorized = b"1" if request.header(b"authorization") is not None else b"0"
        parts = [method, request.route.encode(), request.path.encode(), sorted_query(request.query),
                 request.schema_version.encode(), authorized]
        for name in vary:
            parts.append(name.encode("latin-1") + b"=" + (request.header(name.encode("latin-1")) or b""))
        return hashlib.blake2b(b"\0".join(parts), digest_size=16).hexdigest()

    # -- storing --------------------------------------------------------------------------------

    def storable(self, request: CacheRequest, status: int, headers: RawHeaders,
                 metadata: dict[str, Any] | None = None) -> StoreDecision | None:
        if request.method != "GET":
            return None
        route = request.settings
        statuses = route.statuses if route is not None else [200]
        if status not in statuses:
            return None
        response_headers = _hishel_headers(headers)
        control = parse_cache_control(response_headers.get("cache-control"))
        if control.no_cache is True:
            return None  # must be revalidated before each use, and we do not revalidate
        vary = vary_names(response_headers.get("vary", ""))
        if "*" in vary:
            return None
        if request.header(b"authorization") is not None and not control.public:
            return None
        # The route's status list is the out-of-band permission to keep a status that RFC 9111
        # would otherwise keep only with explicit freshness; everything else is hishel's call.
        judged = status if status in HEURISTICALLY_CACHEABLE_STATUS_CODES or status in (206, 304) else 200
        state = CacheMiss(request=Request(method=request.method, url=request.path,
                                          headers=_hishel_headers(request.headers)),
                          options=_OPTIONS).next(Response(status_code=judged, headers=response_headers))
        if not isinstance(state, StoreAndUse):
            return None
        kept_names = {name.encode("latin-1") for name in state.response.headers}
        if b"set-cookie" in kept_names:
            return None  # one client's cookie must never reach another
        kept = [(n, v) for n, v in headers if n in kept_names and n not in _NOT_STORED_HEADERS]

        age = _int(response_headers.get("age")) or 0
        limits = [self._route_ttl(route) * 1000]
        if metadata and metadata.get("cache_time") is not None:
            limits.append(int(float(metadata["cache_time"]) * 1000))
        explicit = (control.s_maxage is not None or control.max_age is not None
                    or "expires" in response_headers)
        if explicit:
            lifetime = get_freshness_lifetime(Response(status_code=status, headers=response_headers), True)
            if lifetime is not None:
                limits.append((lifetime - age) * 1000)
        ttl_ms = min(limits)
        if ttl_ms <= 0:
            return None
        revalidate = control.must_revalidate or control.proxy_revalidate
        grace = 0 if revalidate else max(self.settings.stale_grace, control.stale_if_error or 0)
        swr = 0 if revalidate else (control.stale_while_revalidate
                                    if control.stale_while_revalidate is not None
                                    else self.settings.stale_while_revalidate)
        return StoreDecision(ttl_ms=int(ttl_ms), grace_ms=grace * 1000, swr_ms=swr * 1000, vary=vary,
                             headers=kept, age=age)

    def _route_ttl(self, route: RouteCacheSpec | None) -> int:
        if route is not None and route.ttl is not None:
            return route.ttl
        return self.settings.ttl


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _hishel_headers(raw: RawHeaders) -> Headers:
    grouped: dict[str, list[str]] = {}
    for name, value in raw:
        grouped.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return Headers(grouped)
