"""The cache across a fleet: three gateway replicas as processes, one Redis, real backends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.support import BackendServer, GatewayProcess, replicas

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

TOKEN = "cache-admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def _config(backend: BackendServer, redis_url: str, prefix: str, **cache: Any) -> dict[str, Any]:
    return {
        "redis": {"url": redis_url, "prefix": prefix},
        "admin": {"token": TOKEN},
        "cache": cache,
        "router": {"routes": [{"path": "/c/*", "target": backend.url, "strip_prefix": True}]},
    }


@pytest.fixture(scope="module")
def shared_backend() -> Iterator[BackendServer]:
    with BackendServer("fleet-backend") as server:
        yield server


@pytest.fixture(scope="module")
def module_fleet(shared_backend: BackendServer, redis_url: str) -> Iterator[list[GatewayProcess]]:
    # One fleet for the module (starting three processes is the slow part); each test cleans up.
    prefix = f"t{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(redis_url)
    try:
        # A generous lock_wait: on a loaded machine a cold replica's first fetch can take seconds,
        # and a waiter that gives up goes to the backend (the bound itself: test_cache_proxy).
        with replicas(_config(shared_backend, redis_url, prefix, lock_wait=20), 3) as procs:
            yield procs
    finally:
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture
def fleet(module_fleet: list[GatewayProcess], shared_backend: BackendServer) -> list[GatewayProcess]:
    httpx.post(module_fleet[0].url + "/_gateway/cache/invalidate", json={"pattern": "/"}, headers=ADMIN)
    shared_backend.reset_hits()
    return module_fleet


@pytest.fixture
def backend(shared_backend: BackendServer) -> BackendServer:
    return shared_backend


def _get(replica: GatewayProcess, path: str) -> httpx.Response:
    return httpx.get(replica.url + path, timeout=10)


def test_cached_through_one_replica_is_a_hit_on_the_others(fleet: list[GatewayProcess],
                                                          backend: BackendServer) -> None:
    a, b, c = fleet
    first = _get(a, "/c/headers/shared?X-Thing=1")
    assert first.headers["x-cache"] == "MISS"
    for replica in (b, c):
        answer = _get(replica, "/c/headers/shared?X-Thing=1")
        assert answer.headers["x-cache"] == "HIT"
        assert answer.content == first.content
        assert answer.headers["x-thing"] == "1"
    assert backend.hits["/headers/shared"] == 1


def test_concurrent_misses_over_three_replicas_make_one_backend_request(fleet: list[GatewayProcess],
                                                                       backend: BackendServer) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=15) as client:
            calls = [client.get(fleet[i % 3].url + "/c/slow?seconds=0.5") for i in range(30)]
            return await asyncio.gather(*calls)

    answers = asyncio.run(burst())
    assert backend.hits["/slow"] == 1
    assert all(answer.status_code == 200 for answer in answers)
    assert len({answer.content for answer in answers}) == 1
    verdicts = sorted(answer.headers["x-cache"] for answer in answers)
    assert verdicts == ["HIT"] * 29 + ["MISS"]


def test_invalidation_through_one_replica_makes_every_replica_miss(fleet: list[GatewayProcess],
                                                                  backend: BackendServer) -> None:
    a, b, c = fleet
    for replica in (a, b, c):
        _get(a, "/c/items/1")
        assert _get(replica, "/c/items/1").headers["x-cache"] == "HIT"
        done = httpx.post(b.url + "/_gateway/cache/invalidate", json={"pattern": "/c/items"}, headers=ADMIN)
        assert done.status_code == 200 and done.json()["removed"] == 1
        assert _get(replica, "/c/items/1").headers["x-cache"] == "MISS"


def test_stats_are_the_fleets_and_admin_calls_need_the_token(fleet: list[GatewayProcess]) -> None:
    a, b, c = fleet
    before = httpx.get(a.url + "/_gateway/cache/stats", headers=ADMIN).json()
    _get(a, "/c/s")          # miss
    _get(b, "/c/s")          # hit
    _get(c, "/c/s")          # hit
    seen = [httpx.get(r.url + "/_gateway/cache/stats", headers=ADMIN).json() for r in fleet]
    assert seen[0] == seen[1] == seen[2]
    assert seen[0]["hits"] - before["hits"] == 2
    assert seen[0]["misses"] - before["misses"] == 1
    assert seen[0]["size"] == 1
    assert httpx.get(a.url + "/_gateway/cache/stats").status_code == 401
    assert httpx.post(a.url + "/_gateway/cache/invalidate", json={"pattern": "/"},
                      headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_max_size_holds_for_the_fleet_and_the_most_recently_read_survive(
        redis_url: str, key_prefix: str, redis_client: redis.Redis) -> None:
    with BackendServer("lru-backend") as backend, \
            replicas(_config(backend, redis_url, key_prefix, max_size=10, buckets=1), 3) as fleet:  # one LRU
        for i in range(10):
            assert _get(fleet[i % 3], f"/c/k/{i}").headers["x-cache"] == "MISS"
        for i in range(5):  # read the five oldest again, through other replicas
            assert _get(fleet[(i + 1) % 3], f"/c/k/{i}").headers["x-cache"] == "HIT"
        for i in range(10, 15):
            assert _get(fleet[i % 3], f"/c/k/{i}").headers["x-cache"] == "MISS"
        entries = redis_client.keys(f"{key_prefix}:cache:*:e2:*")
        assert len(entries) == 10
        stats = httpx.get(fleet[0].url + "/_gateway/cache/stats", headers=ADMIN).json()
        assert stats["size"] == 10
        survivors = [i for i in (*range(5), *range(10, 15))
                     if _get(fleet[i % 3], f"/c/k/{i}").headers["x-cache"] == "HIT"]
        assert survivors == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
        assert _get(fleet[0], "/c/k/7").headers["x-cache"] == "MISS"  # one of the evicted
        assert len(redis_client.keys(f"{key_prefix}:cache:*:e2:*")) == 10
