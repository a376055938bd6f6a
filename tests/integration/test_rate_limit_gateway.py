"""Rate limiting in the gateway: real HTTP through the proxy to a real backend, on a real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.config import parse_config
from tests.support import BackendServer, GatewayThread, RedisProcess, metric_value

pytestmark = pytest.mark.redis

API_KEY = "k-0123456789abcdef-gold"


def _gateway(redis_url: str, backend: BackendServer, **rate_limiter: Any) -> GatewayThread:
    return GatewayThread(parse_config({
        "redis": {"url": redis_url, "prefix": f"t{uuid.uuid4().hex[:8]}"},
        "router": {"routes": [
            {"path": "/api/*", "target": backend.url},
            {"path": "/tight/*", "target": backend.url, "rate_limit": {"requests_per_minute": 2}},
            {"path": "/closed/*", "target": backend.url, "failure_policy": "fail_closed"},
        ]},
        "cache": {"enabled": False},
        "rate_limiter": {
            "default": {"requests_per_minute": 3, "requests_per_hour": None},
            "tiers": {"gold": {"requests_per_minute": 100}},
            "clients": {"partner": {"tier": "gold", "requests_per_hour": 500}},
            "api_keys": [{"key": API_KEY, "client_id": "acme", "tier": "gold"}],
            **rate_limiter,
        },
    }, {}))


@pytest.fixture
def gateway(redis_url: str, backend: BackendServer) -> Iterator[GatewayThread]:
    # Its tests tell clients apart by X-Client-ID, believed from the local network.
    with _gateway(redis_url, backend, trusted_proxies=["127.0.0.0/8"],
                  client_id_trusted_from=["127.0.0.0/8"]) as server:
        yield server


def _stats(gateway: GatewayThread, client_id: str) -> dict[str, Any]:
    limiter = gateway.gateway.orchestrator.rate_limiter
    return dict(gateway.run(limiter.get_client_stats(client_id)))


def test_every_answer_carries_the_headers_and_the_429_is_json(gateway: GatewayThread) -> None:
    limited_before = metric_value("apigw_rate_limited_total", route="* /api/*")
    with httpx.Client(base_url=gateway.url) as client:
        answers = [client.get("/api/a", headers={"X-Client-ID": "h"}) for _ in range(4)]
        missing = client.get("/nowhere", headers={"X-Client-ID": "h"})
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    for answer in answers:
        assert answer.headers["ratelimit-limit"] == answer.headers["x-ratelimit-limit"] == "3"
        assert 60 <= int(answer.headers["ratelimit-reset"]) <= 61
        assert answer.headers["x-ratelimit-reset"] == answer.headers["ratelimit-reset"]
    refused = answers[3]
    assert refused.headers["content-type"] == "application/json"
    retry = int(refused.headers["retry-after"])
    assert 59 <= retry <= 61
    assert refused.json() == {"error": "rate limit exceeded", "retry_after": retry, "limit": 3, "client_id": "h"}
    assert missing.status_code == 429  # a request with no route is counted too (DESIGN: limit, then route)
    assert metric_value("apigw_rate_limited_total", route="* /api/*") == limited_before + 1


def test_client_identity_key_then_client_id_then_peer(gateway: GatewayThread) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        by_key = client.get("/api/a", headers={"X-API-Key": API_KEY, "X-Client-ID": "someone-else"})
        assert by_key.headers["ratelimit-limit"] == "100"  # the key's tier
        by_header = client.get("/api/a", headers={"X-Client-ID": "partner"})
        assert by_header.headers["ratelimit-limit"] == "100"  # the client's tier, its own hour limit
        unknown_key = client.get("/api/a", headers={"X-API-Key": "not-a-key-at-all-0000", "X-Client-ID": "zed"})
        assert unknown_key.headers["ratelimit-limit"] == "3"
        # The peer (127.0.0.1) is a trusted proxy here: the client is the address it appended.
        forwarded = client.get("/api/a", headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"})
    assert _stats(gateway, "acme")["requests_this_minute"] == 1
    assert _stats(gateway, "someone-else")["requests_this_minute"] == 0
    assert _stats(gateway, "zed")["requests_this_minute"] == 1
    assert _stats(gateway, "ip:198.51.100.7")["requests_this_minute"] == 1
    assert forwarded.status_code == 200


def test_forwarded_for_is_ignored_from_untrusted_peers(redis_url: str, backend: BackendServer) -> None:
    with _gateway(redis_url, backend) as gateway, httpx.Client(base_url=gateway.url) as client:
        for _ in range(4):
            answer = client.get("/api/a", headers={"X-Forwarded-For": f"10.9.9.{_}"})
        assert answer.status_code == 429  # four "different" clients are one peer: 127.0.0.1
        assert _stats(gateway, "ip:127.0.0.1")["requests_this_minute"] == 3


def test_route_limit_is_tighter_and_both_apply(gateway: GatewayThread) -> None:
    headers = {"X-Client-ID": "partner"}  # 100/minute of its own
    with httpx.Client(base_url=gateway.url, headers=headers) as client:
        tight = [client.get("/tight/x") for _ in range(3)]
        assert [a.status_code for a in tight] == [200, 200, 429]
        assert tight[0].headers["ratelimit-limit"] == "2"  # the route's limit has the least left
        assert client.get("/api/x").status_code == 200
    # The refused request charged nothing: two on the tight route plus one elsewhere.
    assert _stats(gateway, "partner")["requests_this_minute"] == 3


def test_set_client_config_applies_to_the_running_gateway(gateway: GatewayThread) -> None:
    limiter = gateway.gateway.orchestrator.rate_limiter
    gateway.run(limiter.set_client_config("h2", {"requests_per_minute": 1}))
    with httpx.Client(base_url=gateway.url, headers={"X-Client-ID": "h2"}) as client:
        assert [client.get("/api/a").status_code for _ in range(2)] == [200, 429]


def test_failure_policy_per_route_while_redis_is_down(backend: BackendServer) -> None:
    with RedisProcess() as server, _gateway(server.url, backend) as gateway, \
            httpx.Client(base_url=gateway.url, headers={"X-Client-ID": "p"}) as client:
        assert client.get("/api/a").headers["ratelimit-remaining"] == "2"
        errors_before = metric_value("apigw_store_errors_total", component="ratelimit")
        server.stop()
        started = time.monotonic()
        answers = [(client.get("/api/a"), client.get("/closed/a")) for _ in range(10)]
        took = time.monotonic() - started
        for opened, closed in answers:
            assert opened.status_code == 200 and "ratelimit-limit" not in opened.headers
            assert closed.status_code == 503 and closed.headers["retry-after"] == "1"
            assert closed.json() == {"error": "rate limiter unavailable", "retry_after": 1}
        assert took < 5  # coarse: 20 requests, none waiting out a Redis timeout
        assert metric_value("apigw_store_errors_total", component="ratelimit") >= errors_before + 20


async def test_seed_integration_example(backend: BackendServer) -> None:
    # The seed's orchestrator example (memory store, default 60/minute), with a real backend.
    from app.orchestrator import ApiGatewayOrchestrator

    orchestrator = ApiGatewayOrchestrator()
    await orchestrator.start()
    try:
        orchestrator.router.add_route("/api/test", "GET", backend.url)
        response, status = await orchestrator.handle_request(
            client_id="test", path="/api/test", method="GET", data={}, schema_version="v1")
        assert status == 200
        for _ in range(100):
            await orchestrator.handle_request("test", "/api/test", "GET", {})
        response, status = await orchestrator.handle_request("test", "/api/test", "GET", {})
        assert status == 429
        assert response["error"] == "rate limit exceeded"
    finally:
        await orchestrator.close()
