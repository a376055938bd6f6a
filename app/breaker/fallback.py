"""What a client gets while a circuit is open: a registered fallback, or 503 JSON with Retry-After."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.config import FallbackSpec
from app.pipeline.exchange import JSON_CONTENT, Reply, RawHeaders, error_reply


@dataclass(slots=True)
class Fallback:
    body: Any
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)


class ApiFallbackService:
    """Fallback answers by endpoint (a library breaker's name, or a route's key or path)."""

    def __init__(self) -> None:
        self._fallbacks: dict[str, Fallback] = {}

    def register_fallback(self, endpoint: str, response: Any, status: int = 503,
                          headers: dict[str, str] | None = None) -> None:
        self._fallbacks[endpoint] = Fallback(response, status, dict(headers or {}))

    def remove_fallback(self, endpoint: str) -> None:
        self._fallbacks.pop(endpoint, None)

    def has_fallback(self, endpoint: str) -> bool:
        return endpoint in self._fallbacks

    def get_fallback(self, endpoint: str) -> Any:
        """The seed's call: the fallback body for ``endpoint`` (a JSON error when none is registered)."""
        fallback = self._fallbacks.get(endpoint)
        if fallback is not None:
            return fallback.body
        return {"error": "service unavailable", "endpoint": endpoint}

    def find(self, *endpoints: str) -> Fallback | None:
        for endpoint in endpoints:
            fallback = self._fallbacks.get(endpoint)
            if fallback is not None:
                return fallback
        return None


def _body_bytes(body: Any) -> tuple[bytes, bool]:
    if isinstance(body, bytes):
        return body, False
    if isinstance(body, str):
        return body.encode(), False
    return orjson.dumps(body), True


def open_circuit_reply(circuit: str, state: str, retry_after: float,
                       fallback: FallbackSpec | Fallback | None) -> Reply:
    """The answer for a refused request: the fallback when configured, else 503 JSON; both say
    when to come back (Retry-After) unless the fallback is a success."""
    seconds = str(max(1, math.ceil(retry_after))).encode()
    headers: RawHeaders = [(b"x-circuit-state", state.encode())]
    if fallback is None:
        return error_reply(503, "circuit open", [*headers, (b"retry-after", seconds)],
                           circuit=circuit, retry_after=int(seconds))
    body, is_json = _body_bytes(fallback.body if fallback.body is not None else {"error": "circuit open"})
    names = {name.lower() for name in fallback.headers}
    if is_json and "content-type" not in names:
        headers.append(JSON_CONTENT)
    headers.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in fallback.headers.items())
    if fallback.status >= 500 or fallback.status == 429:
        if "retry-after" not in names:
            headers.append((b"retry-after", seconds))
    return Reply(fallback.status, headers, body)
