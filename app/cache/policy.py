"""What is cacheable and under which key: ``CacheStrategy`` (the extension point) and the default.

The storage rules of RFC 9111 section 3 are those of hishel's sans-IO ``CacheMiss`` state (method,
final status, no-store, private, Authorization, explicit freshness) and its header and freshness
helpers; this module adds what a gateway needs on top (docs/design.md, "Cache"): status allow-list per
route, Vary: * and Set-Cookie not stored, an Authorization'd request stored only when the response
says ``public``, and the TTL rule min(metadata cache_time, route ttl, s-maxage/max-age minus Age).
An answer that is stale on arrival, or says ``no-cache``, is kept only with a validator, to be
revalidated before it is used (app/cache/conditional.py).

Two modes (``cache.mode``, or a route's own): ``seed`` keeps an answer without freshness
information for the ttl, as the seed did; ``rfc9111`` keeps only what RFC 9111 lets a shared cache
keep, fresh for its explicit lifetime or for the heuristic of section 4.2.2 (a tenth of the time
since Last-Modified), and its routes' statuses default to every status it may store.

Every miss is judged, so ``storable`` does not build hishel's objects per response: it applies the
verdict they reduce to for a shared cache that stores GET only (see ``storable``), with hishel's
Cache-Control parser (its results kept per header value). Lifetimes and ages are read strictly
(freshness.py): what cannot be read makes the response stale, never long-lived. A valid targeted
field (targeted.py: the gateway's own, then CDN-Cache-Control), else Surrogate-Control's
directives for the gateway (surrogate.py), takes the place of Cache-Control and Expires. Header
names are lower-case, as ASGI and the proxy give them.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import time
from collections.abc import Container
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hishel._core._headers import CacheControl, parse_cache_control

from app.cache.conditional import field_value
from app.cache.freshness import NO_DELTAS, age_seconds, delta_directives, expires_lifetime, heuristic_lifetime
from app.cache.surrogate import SURROGATE_CONTROL, surrogate_policy
from app.cache.targeted import CDN_CACHE_CONTROL, TargetedPolicy, targeted_policy
from app.config import CacheSection, RouteCacheSpec

RawHeaders = list[tuple[bytes, bytes]]

# Never served from a shared store: they describe one exchange, not the resource.
_NOT_STORED_HEADERS = frozenset({b"age", b"x-request-id", b"x-cache", b"set-cookie"})
# Connection-specific fields, never stored (RFC 9111 3.1; hishel's exclude_unstorable_headers).
_CONNECTION_HEADERS = frozenset({b"connection", b"keep-alive", b"te", b"transfer-encoding", b"upgrade",
                                 b"proxy-connection", b"proxy-authenticate", b"proxy-authentication-info",
                                 b"proxy-authorization"})
_NEVER_KEPT = _NOT_STORED_HEADERS | _CONNECTION_HEADERS
# The response fields the storage decision reads (a validator: how long an expired entry is kept).
_DECIDING = frozenset({b"cache-control", b"vary", b"age", b"expires", b"set-cookie", b"etag", b"last-modified"})
_WATCHED = _DECIDING | _NEVER_KEPT
_OK = (200,)
# "&" as a byte's value: looked for in a query as a number, which is several times faster than as
# b"&" (``bytes in bytes`` raises and clears a TypeError inside CPython before it searches).
QUERY_SEPARATOR = ord("&")
# RFC 9111 section 4.2.2 (RFC 9110 section 15.1): the statuses that may be given heuristic
# freshness. 206 is one too, but partial answers are not stored here.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# rfc9111 mode's default statuses: every final status a shared cache may store (with explicit
# freshness, or heuristically cacheable), but 206 (ranges are not kept) and 304 (it freshens an
# entry instead: conditional.py).
_NEVER_STORED_STATUSES = frozenset({206, 304})
RFC9111_STATUSES = frozenset(range(200, 600)) - _NEVER_STORED_STATUSES
# The final statuses RFC 9110 defines: those this cache understands (must-understand, RFC 9111
# section 5.2.2.3).
UNDERSTOOD_STATUSES = frozenset({*range(200, 206), *range(300, 306), 307, 308, *range(400, 418), 421, 422, 426,
                                 *range(500, 506)})
_NO_DIRECTIVES = CacheControl()
_CONTROLS: dict[bytes, CacheControl] = {}
_CONTROLS_KEPT = 512


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
    # Who a credential proved the client to be, on a route with auth: an answer that does not say
    # Cache-Control: public is then kept for this consumer alone.
    consumer: str | None = None
    # The request's host on a route with a host condition ("" on others, which answer every host
    # alike): a wildcard route's answer for one host is never served for another.
    host: str = ""
    # name -> value (repeated fields joined), built on the first ``header`` call: the strategy
    # asks for several fields per request, and ``headers`` is not changed once the request is made.
    _index: dict[bytes, bytes] | None = field(default=None, init=False, repr=False, compare=False)
    # Its bucket and uri id (``ApiCacheManager._place``), worked out on its first script call.
    place: tuple[Any, str] | None = field(default=None, init=False, repr=False, compare=False)

    def header(self, name: bytes) -> bytes | None:
        index = self._index
        return (index if index is not None else self.fields()).get(name)

    def fields(self) -> dict[bytes, bytes]:
        """name -> value, repeated fields joined: for several ``header`` lookups at once."""
        index = self._index
        if index is None:
            index = dict(self.headers)
            if len(index) != len(self.headers):  # a repeated field: its values joined
                index = {key: b", ".join([v for k, v in self.headers if k == key]) for key in index}
            self._index = index
        return index


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
    # How long the entry is kept past its freshness to be revalidated (it has a validator); it is
    # never served stale for that, only asked about (app/cache/conditional.py).
    revalidate_ms: int = 0


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
    if QUERY_SEPARATOR not in query:
        return query
    return b"&".join(sorted(part for part in query.split(b"&") if part))


# Every lookup names its URI (a fill lock lists the fill there) and a store names it again: the
# hot URIs' ids are kept rather than hashed on each request.
@functools.lru_cache(maxsize=4096)
def uri_id(host: str, path: str, query: bytes) -> str:
    """A short id naming a URI as the cache's invalidation sees it: the host of a route with a host
    condition ("" on others), the path and the sorted query. Every entry stored for the URI, of
    any route, schema version or Vary variant, is listed under it."""
    key = b"\0".join((host.encode("latin-1"), path.encode(), sorted_query(query)))
    return hashlib.blake2b(key, digest_size=16).hexdigest()


@functools.lru_cache(maxsize=1024)
def _variant_id(method: str, route: str, schema_version: str, authorized: bool) -> str:
    """What a cache key names besides the URI and the Vary'd values, hashed: the same few values
    come back on every request. As wide as the URI's id: the schema version is the client's."""
    key = b"\0".join((method.encode(), route.encode(), schema_version.encode(), b"1" if authorized else b"0"))
    return hashlib.blake2b(key, digest_size=16).hexdigest()


# The Vary name under which a private answer of a route with auth is kept per consumer. "@" is not
# in a header name's alphabet, so no response's own Vary can name it.
CONSUMER = "@consumer"


def vary_names(value: str) -> tuple[str, ...]:
    return tuple(sorted({name.strip().lower() for name in value.split(",") if name.strip()}))


# Fields whose values are case-insensitive tokens (media ranges, charsets, codings, language tags).
_CASELESS = frozenset({b"accept", b"accept-charset", b"accept-encoding", b"accept-language"})


def selecting_value(name: bytes, value: bytes) -> bytes:
    """A Vary'd field's value as the key holds it: requests whose values differ only in the
    whitespace around a list's commas (or in empty members), or in case where the field's values
    are case-insensitive, select the same answer (RFC 9111 section 4.1 allows normalising both)."""
    if b"," in value or value[:1] in b" \t" or value[-1:] in b" \t":
        value = b",".join([part for part in (member.strip(b" \t") for member in value.split(b",")) if part])
    return value.lower() if name in _CASELESS else value


class DefaultCacheStrategy(CacheStrategy):
    """The rules of docs/design.md: GET/HEAD, status 200 unless the route lists others, Cache-Control and
    Vary honoured, Authorization only with ``public``; key = method, route, path, sorted query,
    schema version, Vary'd headers (and whether the request was authorized, and the host on a route
    with a host condition); on a route with auth,
    an answer without ``public`` is kept per consumer."""

    def __init__(self, settings: CacheSection | None = None) -> None:
        self.settings = settings or CacheSection()
        # RFC 9213's target list: the gateway's own field first, then CDN-Cache-Control.
        own = self.settings.targeted_field
        self._targets = tuple(dict.fromkeys(
            ((own.lower().encode("latin-1"),) if own else ()) + (CDN_CACHE_CONTROL,)))
        self._watched = _WATCHED | frozenset(self._targets) | {SURROGATE_CONTROL}
        # The gateway's own field is addressed to it alone: never kept (nor forwarded: orchestrator).
        self._never_kept = _NEVER_KEPT | frozenset(self._targets[:1] if own else ())
        # A route's statuses when it lists none, by its mode (None: cache.mode's).
        self._rfc9111 = self.settings.mode == "rfc9111"
        self._mode_statuses: dict[str | None, Container[int]] = {
            "seed": _OK, "rfc9111": RFC9111_STATUSES, None: RFC9111_STATUSES if self._rfc9111 else _OK}

    # -- lookup ---------------------------------------------------------------------------------

    def lookup(self, request: CacheRequest) -> Lookup:
        if request.method not in ("GET", "HEAD"):
            return Lookup.BYPASS
        fields = request.fields()
        control = fields.get(b"cache-control")
        if control is None:
            pragma = fields.get(b"pragma")
            return Lookup.REFRESH if pragma is not None and b"no-cache" in pragma.lower() else Lookup.LOOKUP
        directives = cache_control(control)
        if directives.no_store:
            return Lookup.BYPASS
        if directives.no_cache or directives.max_age == 0:
            return Lookup.REFRESH
        return Lookup.LOOKUP

    def cache_key(self, request: CacheRequest, vary: tuple[str, ...] = ()) -> str:
        # The URI's id (``uri_id``: host, path, sorted query), then an id of the rest: method (HEAD is
        # answered from the GET entry, RFC 9110 9.3.2; it is never stored itself), route, schema
        # version, whether the request was authorized, then the Vary'd values. A miss hashes its URI
        # once, for its key and its listing alike; the rest takes a few values, hashed once each.
        method = "GET" if request.method == "HEAD" else request.method
        key = uri_id(request.host, request.path, request.query) + _variant_id(
            method, request.route, request.schema_version, request.header(b"authorization") is not None)
        if vary:
            values = b""
            for name in vary:
                field = name.encode("latin-1")
                value = (request.consumer or "").encode() if name == CONSUMER else request.header(field)
                values += b"\0" + field + b"=" + (selecting_value(field, value) if value else b"")
            key += hashlib.blake2b(values, digest_size=16).hexdigest()
        return key

    # -- storing --------------------------------------------------------------------------------

    def storable(self, request: CacheRequest, status: int, headers: RawHeaders,
                 metadata: dict[str, Any] | None = None) -> StoreDecision | None:
        # For a shared cache, a GET and a final status, hishel's CacheMiss stores unless: the
        # status is 206 or 304, no-store, an unqualified private, or an Authorization'd request
        # without public/s-maxage/must-revalidate (ours asks public: stricter). Its "explicit
        # freshness or heuristically cacheable" condition always holds here, as the status it is
        # shown is one it may keep heuristically. It then drops the connection-specific fields and
        # those named by no-cache="..." or private="...".
        if request.method != "GET":
            return None
        route = request.settings
        if route is not None and route.statuses is not None:
            if status not in route.statuses or status in _NEVER_STORED_STATUSES:
                return None
        elif status not in self._mode_statuses[route.mode if route is not None else "seed"]:
            return None
        found: dict[bytes, bytes] | None = None
        watched = self._watched
        for name, value in headers:
            if name in watched:
                if found is None:
                    found = {}
                found[name] = found[name] + b", " + value if name in found else value
        if found is None:  # the usual answer: nothing that decides, nothing to leave out
            return self._plain_decision(request, route, list(headers), metadata)
        targeted = self._targeted(found)
        raw_control = found.get(b"cache-control")
        if targeted is not None:  # RFC 9213: Cache-Control and Expires are then ignored
            control, deltas = targeted.control, targeted.deltas
        else:
            control = _NO_DIRECTIVES if raw_control is None else cache_control(raw_control)
            deltas = delta_directives(raw_control) if raw_control is not None else NO_DELTAS
        if control.must_understand:
            if status not in UNDERSTOOD_STATUSES:
                return None
        elif control.no_store:  # must-understand with a status understood overrides it (section 5.2.2.3)
            return None
        if control.private is True:
            return None
        raw_vary = found.get(b"vary")
        vary = vary_names(raw_vary.decode("latin-1")) if raw_vary is not None else ()
        if "*" in vary:
            return None
        if not control.public and request.header(b"authorization") is not None:
            return None
        if not control.public and request.consumer is not None:
            vary = tuple(sorted((*vary, CONSUMER)))
        never = self._never_kept
        if isinstance(control.no_cache, list) or isinstance(control.private, list):
            listed = {name.lower().encode("latin-1")
                      for names in (control.no_cache, control.private) if isinstance(names, list) for name in names}
            if b"set-cookie" in found and b"set-cookie" not in listed:
                return None  # one client's cookie must never reach another
            never = never | listed
        elif b"set-cookie" in found:
            return None
        kept = [pair for pair in headers if pair[0] not in never]

        raw_age = found.get(b"age")
        age = age_seconds(raw_age) if raw_age is not None else 0
        if age is None:
            return None  # an Age that cannot be read: stale
        if deltas.invalid:
            return None  # a max-age or s-maxage that cannot be read: stale
        ttl_ms = self._route_ttl(route) * 1000
        if metadata and metadata.get("cache_time") is not None:
            ttl_ms = min(ttl_ms, int(float(metadata["cache_time"]) * 1000))
        lifetime = deltas.s_maxage if deltas.s_maxage is not None else deltas.max_age
        if lifetime is None and b"expires" in found and targeted is None:
            lifetime = expires_lifetime(found[b"expires"], field_value(headers, b"date"), time.time())
        if lifetime is None and self._is_rfc9111(route):
            # No explicit freshness: stored only when section 3 allows it, fresh only for what
            # section 4.2.2's heuristic gives (nothing without Last-Modified).
            if status not in HEURISTIC_STATUSES and not control.public:
                return None
            lifetime = heuristic_lifetime(found.get(b"last-modified"), field_value(headers, b"date"), time.time()) or 0
        if lifetime is not None:
            ttl_ms = min(ttl_ms, (lifetime - age) * 1000)
        validated = b"etag" in found or b"last-modified" in found
        # no-cache: kept, but never used without a revalidation (section 5.2.2.4); it is stale at once.
        no_cache = control.no_cache is True
        if ttl_ms <= 0 or no_cache:
            if not validated:
                return None  # stale, and nothing to revalidate it with
            ttl_ms = 0
        # No stale answer at all, not even one kept for stale_grace (RFC 9111 section 4.2.4):
        # s-maxage carries proxy-revalidate's meaning for a shared cache (section 5.2.2.10).
        revalidate = (no_cache or control.must_revalidate or control.proxy_revalidate
                      or deltas.s_maxage is not None)
        grace = 0 if revalidate else max(self.settings.stale_grace, control.stale_if_error or 0)
        swr = 0 if revalidate else (control.stale_while_revalidate
                                    if control.stale_while_revalidate is not None
                                    else self.settings.stale_while_revalidate)
        return StoreDecision(ttl_ms=int(ttl_ms), grace_ms=grace * 1000, swr_ms=swr * 1000, vary=vary,
                             headers=kept, age=age, revalidate_ms=self.settings.ttl * 1000 if validated else 0)

    def _targeted(self, found: dict[bytes, bytes]) -> TargetedPolicy | None:
        """The first targeted field of the list with a valid, non-empty value (RFC 9213 2.1), else
        Surrogate-Control's directives for the gateway (surrogate.py)."""
        for name in self._targets:
            value = found.get(name)
            if value is not None:
                policy = targeted_policy(value)
                if policy is not None:
                    return policy
        value = found.get(SURROGATE_CONTROL)
        return surrogate_policy(value) if value is not None else None

    def _plain_decision(self, request: CacheRequest, route: RouteCacheSpec | None, headers: RawHeaders,
                        metadata: dict[str, Any] | None) -> StoreDecision | None:
        """``storable`` for an answer without Cache-Control, Vary, Age, Expires, Set-Cookie or a
        field that is never kept: the same rules with their values already known."""
        if request.header(b"authorization") is not None:
            return None  # without public
        settings = self.settings
        if route is None:
            ttl_ms = settings.ttl * 1000
        elif self._rfc9111 if route.mode is None else route.mode == "rfc9111":  # _is_rfc9111, inline
            return None  # no freshness information, and no validator to revalidate it with
        else:
            ttl_ms = (route.ttl if route.ttl is not None else settings.ttl) * 1000
        if metadata and metadata.get("cache_time") is not None:
            ttl_ms = min(ttl_ms, int(float(metadata["cache_time"]) * 1000))
            if ttl_ms <= 0:
                return None
        return StoreDecision(ttl_ms=ttl_ms, grace_ms=settings.stale_grace * 1000,
                             swr_ms=settings.stale_while_revalidate * 1000,
                             vary=(CONSUMER,) if request.consumer is not None else (), headers=headers)

    def _is_rfc9111(self, route: RouteCacheSpec | None) -> bool:
        """Whether answers on this route are kept as RFC 9111 allows (else as the seed did).
        Library calls (no route) keep their value as asked, in both modes."""
        if route is None:
            return False
        return self._rfc9111 if route.mode is None else route.mode == "rfc9111"

    def _route_ttl(self, route: RouteCacheSpec | None) -> int:
        if route is not None and route.ttl is not None:
            return route.ttl
        return self.settings.ttl




def cache_control(value: bytes) -> CacheControl:
    """hishel's parse of a Cache-Control value, kept per value: backends repeat theirs. Shared:
    never to be changed."""
    parsed = _CONTROLS.get(value)
    if parsed is None:
        if len(_CONTROLS) >= _CONTROLS_KEPT:
            _CONTROLS.clear()
        parsed = _CONTROLS[value] = parse_cache_control(value.decode("latin-1"))
    return parsed
