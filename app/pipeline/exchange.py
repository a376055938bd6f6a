"""What the request pipeline works on: the client's request and the answer to it.

``Exchange`` is built from an ASGI scope (or from the seed's library call) and keeps the raw forms
(bytes headers, raw path) so that forwarding needs no re-encoding. ``Reply`` is either complete
(``body``) or streamed from the backend's response (``stream``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from random import getrandbits
from typing import Any

import aiohttp
import orjson

RawHeaders = list[tuple[bytes, bytes]]
ReceiveBody = Callable[[], Awaitable[dict[str, Any]]]

JSON_CONTENT = (b"content-type", b"application/json")


def new_request_id() -> str:
    # 96 random bits from the process's Mersenne Twister (seeded from the OS at start): unique enough
    # to find one request in the logs, without a getrandom() system call per request.
    return "%024x" % getrandbits(96)


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
    # Values the pipeline's steps leave for the later ones and for the access log.
    notes: dict[str, Any] = field(default_factory=dict)
    # Fields a stage adds to the request's access log line (plain JSON values).
    log_fields: dict[str, Any] | None = None
    # Headers the stages add to whatever answer the client gets (RateLimit-*, X-Cache).
    response_headers: RawHeaders = field(default_factory=list)
    # The matched route (app.routing.router.Route; None: no route), for metrics and the access log.
    route: Any = None
    # Seconds spent waiting for backends (all attempts), so the gateway's own time is the rest.
    backend_seconds: float = 0.0
    # The path as the client sent it, when the edge's normalising changed it (for the access log).
    received_path: bytes | None = None
    # ``headers`` by name, first value of each, made on the first ``header`` call (one pass in C
    # instead of a scan per lookup; several stages look up several names).
    _by_name: dict[bytes, bytes] | None = field(default=None, init=False, repr=False)

    def header(self, name: bytes) -> bytes | None:
        by_name = self._by_name
        if by_name is None:
            by_name = self._by_name = dict(reversed(self.headers))
        return by_name.get(name)

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
