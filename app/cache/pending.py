"""One request's dealings with the cache (``Pending``), and the request as the cache sees it."""

from __future__ import annotations

from dataclasses import dataclass

from app.cache.policy import CacheRequest
from app.cache.protocol import LookupReply
from app.pipeline.exchange import Exchange
from app.routing.router import Route, request_host


@dataclass(slots=True)
class Pending:
    """What the stage, a background refresh or the warmer knows of one lookup and its fill."""

    request: CacheRequest
    entry_id: str
    base_id: str
    names: tuple[str, ...]
    token: str = ""
    holds_lock: bool = False
    admitted: bool = False
    # Set once the answer did not come from the backend (HIT, STALE) or the cache is out (BYPASS).
    done: bool = False
    # The lookup's reply when it carried an expired entry, kept to answer instead of a failure.
    stale: LookupReply | None = None
    # This request asked the backend with the kept entry's validators (``stale`` is that entry).
    revalidating: bool = False
    # The backend answered 304: the kept entry, freshened, is the answer.
    freshened: bool = False
    header_at: int = -1
    # The client's Range field, on a route whose answers the cache may slice (app/cache/ranges.py).
    range: bytes | None = None


def cache_request(ex: Exchange, route: Route) -> CacheRequest:
    # The client's schema version is part of the key: a route's transform says where it is
    # (header or path segment); without one, the seed's X-API-Version header.
    transform = route.compiled.transform
    if transform is not None:
        version = transform.client_version(ex.headers, ex.path)
    else:
        raw = ex.header(b"x-api-version")
        version = raw.decode("latin-1") if raw else ""
    consumer = ex.consumer
    return CacheRequest(method=ex.method, route=route.key, path=ex.path, query=ex.query_string,
                        headers=ex.headers, schema_version=version, settings=route.spec.cache,
                        consumer=consumer.id if consumer is not None else None,
                        host=request_host(ex) if route.spec.host is not None else "")
