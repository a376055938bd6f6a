"""What the request pipeline works on: the client's request and the answer to it.

``Exchange`` is built from an ASGI scope (or from the seed's library call) and keeps the raw forms
(bytes headers, raw path) so that forwarding needs no re-encoding. What the pipeline's steps leave
for each other is a typed attribute of it, each saying which step writes it and which reads it.
``Reply`` is either complete (``body``) or streamed from the backend's response (``stream``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from random import getrandbits
from typing import Any, Literal

import aiohttp
import orjson

from app.auth.consumer import Consumer
from app.breaker.breaker import ApiCircuitBreaker, Ticket
from app.ratelimit.limiter import Plan
from app.routing.router import Route, Target
from app.store import ScriptCall

RawHeaders = list[tuple[bytes, bytes]]
ReceiveBody = Callable[[], Awaitable[dict[str, Any]]]

JSON_CONTENT = (b"content-type", b"application/json")


def new_request_id() -> str:
    # 96 random bits from the process's Mersenne Twister (seeded from the OS at start): unique enough
    # to find one request in the logs, without a getrandom() system call per request.
    return "%024x" % getrandbits(96)


@dataclass(slots=True)
class BackendCall:
    """How one attempt went: the backend's status, or None when it gave no answer."""

    status: int | None
    seconds: float

    @property
    def failed(self) -> bool:
        """What the circuit breaker counts as a failure (docs/design.md): no answer, or 5xx."""
        return self.status is None or self.status >= 500


@dataclass(slots=True)
class Exchange:
    method: str
    path: str
    raw_path: bytes
    query_string: bytes
    headers: RawHeaders
    client_addr: str
    scheme: str = "http"
    # A body already read (the library call, a buffered route), else read from ``receive``.
    body: bytes | None = None
    receive: ReceiveBody | None = None
    request_id: str = ""
    client_id: str = ""
    # Fields a stage adds to the request's access log line (plain JSON values).
    log_fields: dict[str, Any] | None = None
    # Headers the stages add to whatever answer the client gets (RateLimit-*, X-Cache).
    response_headers: RawHeaders = field(default_factory=list)
    # The matched route (None: no route). Set by the orchestrator; read by the proxy (metrics) and
    # the access log.
    route: Route[Any] | None = None
    # Seconds spent waiting for backends (all attempts), so the gateway's own time is the rest.
    # Added to by the orchestrator's _attempt; read by the proxy (metrics) and the access log.
    backend_seconds: float = 0.0
    # The path as the client sent it, when the edge's normalising changed it (for the access log).
    received_path: bytes | None = None

    # -- what the pipeline's steps leave for each other, in the order they are written --------
    # Who a credential proved the client to be, on a route with auth (None: no credential, or a
    # bad one). Written by the auth stage's prepare; read by the cache (app/cache/pending.py: a
    # private answer is kept per consumer).
    consumer: Consumer | None = None
    # The tier the client's credential names. Written by the auth stage's prepare (with client_id);
    # read by the rate limit stage's admission_call.
    client_tier: str | None = None
    # An answer decided before the admission round trip and given after it, so that the round trip
    # still charges the rate limit (a 401, a 403 for roles). Written by the auth stage's prepare;
    # read by its admit, and by the cache stage, which looks nothing up for such a request.
    refusal: Reply | None = None
    # The address whose failed authentication is counted in the admission round trip. Written by
    # the auth stage's prepare; read by its admission_call and admit.
    auth_failed_from: str | None = None
    # The rate limit stage's plan for this client and route. Written by its admission_call, read
    # by its admit.
    ratelimit_plan: Plan | None = None
    # "allowed", "limited" or "degraded" (the store could not be asked); None: no limit applied.
    # Written by the rate limit stage's admit; read by the access log.
    ratelimit_outcome: Literal["allowed", "limited", "degraded"] | None = None
    # The cache's record of this request (app.cache.pending.Pending). Written by the cache stage's
    # admission_call, read by its later hooks. Typed Any: that module reads the Exchange, and
    # naming its class here would make the two import each other.
    cache: Any = None
    # Read a backend's answer whole up to this many bytes (else streamed past SMALL_BODY). Written
    # by the cache (a GET whose answer may be kept); read by the orchestrator's _attempt.
    read_body_up_to: int = 0
    # Whether the request's own URI had cached entries when it was admitted (the cache's peek for
    # an unsafe method; True when unknown). Written by the cache stage's admit; read by its
    # completion_call, which purges that URI after a success only then.
    cache_target_stored: bool = True
    # Conditional fields the cache adds to the backend request to revalidate the expired entry it
    # keeps (If-None-Match, If-Modified-Since). Written by the cache stage's admit; read by the
    # orchestrator's _request_headers.
    validators: RawHeaders | None = None
    # Request fields the backend is not sent (lower-case names; None: all are). Written by the cache
    # stage's admission_call (a bytes=0- range that fills the cache: app/cache/ranges.py); read by
    # the orchestrator's _forward.
    not_forwarded: frozenset[bytes] | None = None
    # The target whose circuit admitted the request, on a route with several. Written by the
    # breaker stage's admit; read by the orchestrator's _forward (else its balancer picks).
    target: Target | None = None
    # The breaker that admitted the request and its ticket. Written by the breaker stage's admit;
    # read by its completion_call, which reports the outcome against them.
    circuit: ApiCircuitBreaker | None = None
    circuit_ticket: Ticket | None = None
    # The request is the probe of a half-open circuit: one call, no retries. Written by the breaker
    # stage's admit; read by the orchestrator's _forward.
    no_retry: bool = False
    # Asked before each retry: whether the circuit still admits calls. Written by the breaker
    # stage's admit; read by the orchestrator's _forward (send_with_retries).
    retry_guard: Callable[[], bool] | None = None
    # The client's schema version, from the route's transform. Written by
    # app.transform.apply.transform_request; read by transform_reply, which only runs after it.
    client_version: str = ""
    # The request body passed the route's max_body while it was streamed to the backend. Written
    # by app.edge.bodies.stream_body; read by the orchestrator's _attempt, which sees only the
    # transport's error when the stream stops.
    body_too_large: bool = False
    # The client went away (or the edge refused its stalled body) while the body was streamed to
    # the backend: no backend failure. Written by app.edge.bodies.stream_body; read by _attempt.
    client_gone: bool = False
    # How the backend call went (its last attempt); None: the request never reached a backend.
    # Written by the orchestrator's _forward; read by the breaker stage's completion_call.
    backend: BackendCall | None = None
    # The breaker's outcome write, sent in the completion round trip. Written by the breaker
    # stage's completion_call; read by its completed, which hands the store's reply to the breaker.
    circuit_call: ScriptCall | None = None

    # ``headers`` by name, first value of each, made on the first ``header`` call (one pass in C
    # instead of a scan per lookup; several stages look up several names).
    _by_name: dict[bytes, bytes] | None = field(default=None, init=False, repr=False)

    def header(self, name: bytes) -> bytes | None:
        by_name = self._by_name
        if by_name is None:
            by_name = self._by_name = dict(reversed(self.headers))
        return by_name.get(name)

    def has_any(self, names: frozenset[bytes]) -> bool:
        """Whether the request carries a field of one of these (lower-case) names."""
        by_name = self._by_name
        if by_name is None:
            by_name = self._by_name = dict(reversed(self.headers))
        return not names.isdisjoint(by_name)

    def replace_headers(self, headers: RawHeaders) -> None:
        self.headers = headers
        self._by_name = None


@dataclass(slots=True)
class Reply:
    status: int
    headers: RawHeaders
    body: bytes = b""
    # When set, the body is streamed from the backend's response instead of ``body``.
    stream: aiohttp.ClientResponse | None = None
    # The backend's answer (as opposed to one the gateway made itself).
    from_backend: bool = False


def error_reply(status: int, message: str, headers: RawHeaders | None = None, **details: Any) -> Reply:
    """Every answer the gateway makes itself: JSON ``{"error": ..., ...}``."""
    body = orjson.dumps({"error": message, **details})
    return Reply(status, [JSON_CONTENT, (b"content-length", str(len(body)).encode()), *(headers or [])], body)
