"""A replica's first decisions use the fleet's state, not defaults: a rate limiter that was not
started waits for its configs before its first decision; a circuit breaker made by a replica's
first request knows that another replica opened it. On a real Redis (and a Cluster), with separate
connections as replicas have."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.config import RateLimiterSection, parse_config
from app.rate_limiter import ApiGatewayRateLimiter
from app.store.redis import RedisStore
from tests.support import BackendServer, GatewayThread

pytestmark = pytest.mark.redis


@pytest.fixture
async def replicas(redis_url: str, key_prefix: str, redis_client: object) -> AsyncIterator[list[RedisStore]]:
    stores = [RedisStore(redis_url, prefix=key_prefix) for _ in range(2)]
    for store in stores:
        await store.start()
    yield stores
    for store in stores:
        await store.close()


async def test_a_limiter_not_started_waits_for_its_configs(replicas: list[RedisStore]) -> None:
    config = RateLimiterSection.model_validate({"default": {"requests_per_minute": 1000}})
    first = ApiGatewayRateLimiter(replicas[0], config)
    await first.set_client_config("c", {"requests_per_minute": 10})
    second = ApiGatewayRateLimiter(replicas[1], config)  # never start()ed: its first calls load
    admitted = await asyncio.gather(*(second.is_allowed("c") for _ in range(30)))
    assert sum(admitted) == 10


# -- a circuit another replica opened ---------------------------------------------------------


def _two_replicas(redis: dict[str, Any], targets: list[str]) -> list[GatewayThread]:
    route: dict[str, Any] = {"path": "/svc/*", "strip_prefix": True,
                             "circuit_breaker": {"failure_threshold": 1, "recovery_timeout": 30}}
    if len(targets) == 1:
        route["target"] = targets[0]
    else:
        route["targets"] = [{"url": url} for url in targets]
    config = parse_config({"redis": redis, "router": {"routes": [route]}, "cache": {"enabled": False}}, {})
    return [GatewayThread(config), GatewayThread(config)]


def _first_request_after_the_other_opened_it(replicas: list[GatewayThread], backends: list[BackendServer],
                                             failing: int) -> None:
    first, second = replicas
    with first, second:
        for _ in range(failing):  # round robin: one failure on each target opens its circuit
            assert httpx.get(f"{first.url}/svc/status/500").status_code == 500
        assert httpx.get(f"{first.url}/svc/x").status_code == 503  # open on the replica that saw it
        hits = [backend.hits for backend in backends]
        # The second replica never served this route: its breakers are made by this request.
        assert second.gateway.orchestrator.circuit_breaker_manager.breakers == {}
        refused = httpx.get(f"{second.url}/svc/x")
        assert refused.status_code == 503 and refused.json()["error"] == "circuit open"
        assert [backend.hits for backend in backends] == hits  # nothing reached a backend


@pytest.mark.parametrize("topology", ["redis", "cluster"])
def test_a_replica_refuses_its_first_request_to_a_circuit_another_opened(
        topology: str, request: pytest.FixtureRequest, key_prefix: str, backend: BackendServer) -> None:
    if topology == "redis":
        redis = {"url": request.getfixturevalue("redis_url"), "prefix": key_prefix}
    else:
        redis = {"cluster_nodes": request.getfixturevalue("redis_cluster").seeds[:1], "prefix": key_prefix}
    _first_request_after_the_other_opened_it(_two_replicas(redis, [backend.url]), [backend], 1)


def test_a_replica_refuses_its_first_request_when_every_target_was_opened_by_another(
        redis_url: str, key_prefix: str, backend: BackendServer, backend_b: BackendServer) -> None:
    replicas = _two_replicas({"url": redis_url, "prefix": key_prefix}, [backend.url, backend_b.url])
    _first_request_after_the_other_opened_it(replicas, [backend, backend_b], 2)
