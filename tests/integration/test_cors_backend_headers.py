"""On a route with CORS the gateway's CORS headers replace the backend's: a browser refuses an answer
with two Access-Control-Allow-Origin values, and a backend's ``*`` must not let in an origin the
route does not allow. Real backend, running gateway; the cached answer is checked too."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest

from app.config import parse_config
from tests.support import BackendServer, GatewayThread

ALLOWED, STRANGER = "https://app.example.com", "https://evil.example.net"
# What a backend with CORS of its own says: any origin, credentials, an extra exposed header.
BACKEND_CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true",
                "Access-Control-Expose-Headers": "X-Secret", "access-control-allow-methods": "DELETE",
                "X-Other": "kept"}


@pytest.fixture
def gateway(backend: BackendServer) -> Iterator[GatewayThread]:
    cors = {"origins": [ALLOWED], "methods": ["GET"], "expose_headers": ["X-Request-ID"]}
    with GatewayThread(parse_config({"router": {"routes": [
        {"path": "/cors/*", "target": backend.url, "strip_prefix": True, "cors": cors, "cache": {"enabled": False}},
        {"path": "/cached/*", "target": backend.url, "strip_prefix": True, "cors": cors, "cache": {"ttl": 60}},
        {"path": "/plain/*", "target": backend.url, "strip_prefix": True, "cache": {"enabled": False}},
    ]}}, {})) as server:
        yield server


def _cors(answer: httpx.Response) -> list[tuple[str, str]]:
    return sorted((name.lower(), value) for name, value in answer.headers.multi_items()
                  if name.lower().startswith("access-control-"))


def _get(gateway: GatewayThread, prefix: str, origin: str | None, extra: str = "") -> httpx.Response:
    headers = {"Origin": origin} if origin else {}
    answer = httpx.get(f"{gateway.url}{prefix}/headers{extra}?{urlencode(BACKEND_CORS)}", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer


def test_the_gateways_cors_headers_replace_the_backends(gateway: GatewayThread) -> None:
    answer = _get(gateway, "/cors", ALLOWED)
    assert _cors(answer) == [("access-control-allow-origin", ALLOWED),
                             ("access-control-expose-headers", "X-Request-ID")]
    assert answer.headers["x-other"] == "kept"  # only the CORS headers give way


@pytest.mark.parametrize("origin", [STRANGER, None, "null", "*"])
def test_an_origin_the_route_does_not_allow_gets_none_even_when_the_backend_says_any(
        gateway: GatewayThread, origin: str | None) -> None:
    assert _cors(_get(gateway, "/cors", origin)) == []


def test_a_cached_answer_carries_the_gateways_only(gateway: GatewayThread) -> None:
    first = _get(gateway, "/cached", ALLOWED, "/page")  # kept for the route's ttl
    assert first.headers["x-cache"] == "MISS"
    again = _get(gateway, "/cached", STRANGER, "/page")
    assert again.headers["x-cache"] == "HIT" and _cors(again) == []
    third = _get(gateway, "/cached", ALLOWED, "/page")
    assert third.headers["x-cache"] == "HIT"
    assert _cors(third) == [("access-control-allow-origin", ALLOWED), ("access-control-expose-headers", "X-Request-ID")]


def test_a_route_without_cors_relays_the_backends_cors_headers(gateway: GatewayThread) -> None:
    assert _cors(_get(gateway, "/plain", STRANGER)) == sorted(
        (name.lower(), value) for name, value in BACKEND_CORS.items() if name.lower().startswith("access-control-"))
