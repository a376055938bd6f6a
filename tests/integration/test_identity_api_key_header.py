"""On a route without authentication, the API key still identifies the client for rate limiting,
read from the header ``auth.api_key.header`` names (the one place clients are told to put it), on a
running gateway: the key's tier's limits apply, and what the other header holds identifies nobody."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.config import parse_config
from tests.support import BackendServer, GatewayThread

API_KEY = "k-0123456789abcdef-gold"


def _gateway(backend: BackendServer, auth: dict[str, object]) -> GatewayThread:
    return GatewayThread(parse_config({
        "auth": auth,
        "router": {"routes": [{"path": "/api/*", "target": backend.url}]},
        "cache": {"enabled": False},
        "rate_limiter": {
            "default": {"requests_per_minute": 5, "requests_per_hour": None},
            "tiers": {"enterprise": {"requests_per_minute": 200}},
            "api_keys": [{"key": API_KEY, "client_id": "acme", "tier": "enterprise"}],
        },
    }, {}))


@pytest.fixture
def gateway(backend: BackendServer) -> Iterator[GatewayThread]:
    with _gateway(backend, {"api_key": {"header": "X-Gateway-Key"}}) as server:
        yield server


def _limit(gateway: GatewayThread, headers: dict[str, str]) -> str:
    answer = httpx.get(gateway.url + "/api/x", headers=headers)
    assert answer.status_code == 200
    return answer.headers["ratelimit-limit"]


def test_the_configured_header_identifies_the_client_on_a_route_without_auth(gateway: GatewayThread) -> None:
    assert _limit(gateway, {"X-Gateway-Key": API_KEY}) == "200"  # acme, enterprise tier
    assert _limit(gateway, {"x-gateway-KEY": API_KEY}) == "200"  # the name in any case
    # The default header is not where this gateway reads keys: it identifies nobody.
    assert _limit(gateway, {"X-API-Key": API_KEY}) == "5"


@pytest.mark.parametrize("value", ["", "wrong-key", API_KEY + "x", API_KEY[:-1], API_KEY.upper(), f"{API_KEY},{API_KEY}"])
def test_a_wrong_key_in_the_configured_header_identifies_nobody(gateway: GatewayThread, value: str) -> None:
    assert _limit(gateway, {"X-Gateway-Key": value}) == "5"  # the peer's address and its default limits


def test_without_a_header_configured_the_default_header_identifies(backend: BackendServer) -> None:
    with _gateway(backend, {"api_key": {"header": None, "query": "key"}}) as gateway:
        assert _limit(gateway, {"X-API-Key": API_KEY}) == "200"
    with _gateway(backend, {}) as gateway:
        assert _limit(gateway, {"X-API-Key": API_KEY}) == "200"
        assert _limit(gateway, {"X-Gateway-Key": API_KEY}) == "5"
