"""What the request pipeline works on: the client's request and the answer to it.

``Exchange`` is built from an ASGI scope (or from the seed's library call) and keeps the raw forms
(bytes headers, raw path) so that forwarding needs no re-encoding. ``Reply`` is either complete
(``body``) or streamed from the backend's response (``stream``).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

RawHeaders = list[tuple[bytes, bytes]]
ReceiveBody = Callable[[], Awaitable[dict[str, Any]]]

JSON_CONTENT = (b"content-type", b"application/json")


def new_request_id() -> str:
    return os.urandom(12).hex()


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
    # Headers the stages add to whatever answer the client gets (RateLimit-*, X-Cache).
    response_headers: RawHeaders = field(default_factory=list)
    # The matched route (app.router.Route; None: no route), for metrics and the access log.
    route: Any = None
    # Seconds spent waiting for backends (all attempts), so the gateway's own time is the rest.
    backend_seconds: float = 0.0

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


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
