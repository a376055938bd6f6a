"""Which stored URIs an unsafe request invalidates (RFC 9111 section 4.4).

A request of a method not known to be safe (POST, PUT, PATCH, DELETE, and any method but GET, HEAD,
OPTIONS and TRACE: section 4.4 counts a method of unknown safety as unsafe) answered with a
non-error status (2xx, 3xx) invalidates its target
URI, and the URIs of the answer's ``Location`` and ``Content-Location`` when their host is the
request's: a backend or a client never invalidates another origin's entries. The purge
(``cache_purge``) rides in the request's completion round trip, so it costs none of its own, and it
lands before the answer goes out. When the request's own URI has no entry (a peek in its admission
round trip says so) and the answer names no other URI of its host, nothing is sent: a write that
touches nothing cached costs no round trip of its own. The store is shared, so it holds for the whole fleet at once; no
replica keeps a copy of an entry of its own.

A URI is named as the cache lists its entries (``policy.uri_id``): host, path and sorted query. Each
URI is purged under two names, with the host (the entries of routes with a host condition) and
without (those of routes that answer every host alike); both are in the bucket of the path and
query (``ApiCacheManager.bucket``), so a URI's purge is one call, and the URIs of one answer in
several buckets are one call per bucket, in the same round trip. ``Location`` and ``Content-Location`` are
read as the client receives them, as URIs of the gateway; a relative reference is resolved against
the request's URI, and the path normalised as the edge normalises request paths.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from app.cache.policy import uri_id
from app.cache.protocol import UriTarget
from app.edge.paths import BadPath, PathRules, normalise
from app.pipeline.exchange import Exchange, RawHeaders
from app.routing.router import request_host

# RFC 9110 section 9.2.1's safe methods; every other one invalidates.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_TARGET_FIELDS = (b"location", b"content-location")
_PATH_RULES = PathRules()
# No base URI names a real host: a reference that names one is compared with the request's host.
_NO_HOST = "gateway.invalid"


def target_uri(ex: Exchange) -> UriTarget:
    """The request's own URI (what the admission round trip peeks at)."""
    return _target(ex.path, ex.query_string, request_host(ex))


def invalidated_uris(ex: Exchange, status: int, headers: RawHeaders,
                     target_stored: bool = True) -> tuple[UriTarget, ...]:
    """The URIs that the answer to ``ex`` invalidates; () for a safe method
    or an error status. ``target_stored``: False when the admission's peek found no entry of the
    request's own URI (then only Location and Content-Location are left to purge)."""
    if ex.method in SAFE_METHODS or not 200 <= status < 400:
        return ()
    host = request_host(ex)
    targets = {(ex.path, ex.query_string)} if target_stored else set()
    for name, value in headers:
        if name in _TARGET_FIELDS:
            target = _same_origin(value, ex, host)
            if target is not None:
                targets.add(target)
    return tuple(_target(path, query, host) for path, query in sorted(targets))


def _target(path: str, query: bytes, host: str) -> UriTarget:
    ids = (uri_id("", path, query), uri_id(host, path, query)) if host else (uri_id("", path, query),)
    return UriTarget(path, query, ids)


def _same_origin(value: bytes, ex: Exchange, host: str) -> tuple[str, bytes] | None:
    """The path and query of a ``Location`` or ``Content-Location`` on the request's host, else None
    (another host, another scheme, a value that is no URI reference)."""
    try:
        reference = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    # Where parsers disagree on the host (a backslash, credentials before it), it is another host.
    if not reference or "\\" in reference or any(c <= " " or c == "\x7f" for c in reference):
        return None
    base_host = host or _NO_HOST
    try:
        resolved = urlsplit(urljoin(f"http://{base_host}{ex.raw_path.decode('latin-1')}", reference))
        found_host = resolved.hostname
        resolved.port  # noqa: B018 - read to refuse a port that is no port
    except ValueError:  # an invalid port or IPv6 literal
        return None
    if resolved.scheme not in ("http", "https") or found_host is None or "@" in resolved.netloc:
        return None
    if ":" in found_host:  # an IPv6 literal: request_host keeps its brackets
        found_host = f"[{found_host}]"
    if found_host != base_host:
        return None
    try:
        path = normalise((resolved.path or "/").encode("ascii"), _PATH_RULES).decoded
    except (BadPath, UnicodeEncodeError):
        return None
    return path, resolved.query.encode("ascii")
