"""cache.redis, the cache on a Redis of its own: readiness counts it and names it when it is down,
the limits on ``redis`` never stop for it, and a Redis Cluster serves as the cache's store (a hit is
a hit on another replica, within the round-trip budget)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from app.config import parse_config
from app.store.redis import RedisStore
from tests.redis_topologies import RedisClusterProcesses
from tests.support import BackendServer, GatewayThread, RedisProcess, wait_for

pytestmark = pytest.mark.redis

TOKEN = "cache-own-store-token"
LIMIT = 5


def _config(redis_url: str, prefix: str, backend: BackendServer, cache_redis: dict[str, object]) -> object:
    return parse_config({
        "redis": {"url": redis_url, "prefix": prefix},
        "admin": {"token": TOKEN},
        "router": {"routes": [
            {"path": "/cached/*", "target": backend.url, "cache": {"ttl": 60}},
            {"path": "/limited/*", "target": backend.url, "cache": {"enabled": False},
             "rate_limit": {"requests_per_minute": LIMIT}},
        ]},
        "cache": {"redis": {**cache_redis, "prefix": f"c{prefix}"}},
        "rate_limiter": {"default": {"requests_per_minute": 100_000, "requests_per_hour": None},
                         "client_id_trusted_from": ["127.0.0.0/8"]},
    }, {})


def _limited(client: httpx.Client, name: str) -> list[int]:
    return [client.get("/limited/x", headers={"X-Client-ID": name}).status_code for _ in range(LIMIT + 2)]


def _stores(gateway: GatewayThread) -> tuple[RedisStore, RedisStore]:
    store, cache_store = gateway.gateway.store, gateway.gateway.cache_store
    assert isinstance(store, RedisStore) and isinstance(cache_store, RedisStore) and store is not cache_store
    return store, cache_store


def test_readiness_names_a_lost_cache_store_and_the_limits_go_on(
        redis_url: str, key_prefix: str, redis_client: object, backend: BackendServer) -> None:
    with RedisProcess() as cache_redis:
        config = _config(redis_url, key_prefix, backend, {"url": cache_redis.url})
        with GatewayThread(config) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as client:
            ready = client.get("/_gateway/ready")
            assert (ready.status_code, ready.json()["status"]) == (200, "ready")
            assert "down" not in ready.json()
            cache_redis.stop()
            ready = client.get("/_gateway/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "store unavailable: cache.redis"
            assert ready.json()["down"] == ["cache.redis"]
            replica = client.get("/_gateway/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()["replica"]
            assert (replica["store_ok"], replica["cache_store_ok"]) == (True, False)
            # The limits live on redis: exact as ever. The cached route misses, and answers.
            assert _limited(client, "alice") == [200] * LIMIT + [429] * 2
            assert client.get("/cached/r").status_code == 200
            cache_redis.start()
            wait_for(lambda: client.get("/_gateway/ready").status_code == 200, timeout=10,
                     what="readiness once the cache's Redis is back")


@pytest.fixture
def cache_on_cluster(redis_url: str, key_prefix: str, redis_client: object, backend: BackendServer,
                     redis_cluster: RedisClusterProcesses) -> Iterator[tuple[GatewayThread, GatewayThread]]:
    """Two replicas: the limits on the one Redis, the cache on the session's Redis Cluster."""
    config = _config(redis_url, key_prefix, backend, {"cluster_nodes": redis_cluster.seeds[:1]})
    with ExitStack() as stack:
        one = stack.enter_context(GatewayThread(config))
        two = stack.enter_context(GatewayThread(_config(redis_url, key_prefix, backend,
                                                        {"cluster_nodes": redis_cluster.seeds[:1]})))
        yield one, two


def _round_trips(stores: tuple[RedisStore, RedisStore]) -> list[int]:
    return [store.round_trips for store in stores]


def test_a_cache_on_a_cluster_is_shared_within_the_budget(cache_on_cluster: tuple[GatewayThread, GatewayThread],
                                                           redis_cluster: RedisClusterProcesses) -> None:
    one, two = cache_on_cluster
    stores = _stores(two)
    assert stores[0].cluster is None and stores[1].cluster is not None and len(stores[1].cluster.masters) == 3
    requests = 30
    with httpx.Client(base_url=one.url, timeout=10) as first, httpx.Client(base_url=two.url, timeout=10) as second:
        assert second.get("/_gateway/ready").json()["status"] == "ready"
        # Stored misses through one replica: at most 2 batches on each store per request.
        before, started = _round_trips(stores), time.monotonic()
        for i in range(requests):
            assert second.get(f"/cached/{i}").headers["x-cache"] == "MISS"
        two.run(two.gateway.orchestrator.cache_stage.filler.settled())
        spent = [b - a for a, b in zip(before, _round_trips(stores), strict=True)]
        # The client activity reaches redis about once a second: one round trip each, besides the requests.
        background = int(time.monotonic() - started) + 1
        assert spent[0] <= 2 * requests + background and spent[1] <= 2 * requests, spent
        # A fill through the first replica is a hit through the second: 1 batch on each store, at once.
        assert first.get("/cached/shared").headers["x-cache"] == "MISS"
        one.run(one.gateway.orchestrator.cache_stage.filler.settled())
        before, started = _round_trips(stores), time.monotonic()
        for _ in range(requests):
            assert second.get("/cached/shared").headers["x-cache"] == "HIT"
        spent = [b - a for a, b in zip(before, _round_trips(stores), strict=True)]
        background = int(time.monotonic() - started) + 1
        assert requests <= spent[0] <= requests + background and spent[1] == requests, spent
        # A rate-limited request: 1 batch on redis, none on the cache's store.
        assert _limited(second, "bob")[-1] == 429
        before, started = _round_trips(stores), time.monotonic()
        for _ in range(requests):
            assert second.get("/limited/x", headers={"X-Client-ID": "bob"}).status_code == 429
        spent = [b - a for a, b in zip(before, _round_trips(stores), strict=True)]
        background = int(time.monotonic() - started) + 1
        assert spent[0] <= requests + background and spent[1] == 0, spent


def test_a_killed_cache_master_fails_readiness_and_never_the_limits(
        cache_on_cluster: tuple[GatewayThread, GatewayThread], redis_cluster: RedisClusterProcesses) -> None:
    one, _ = cache_on_cluster
    cache_store = _stores(one)[1]
    assert cache_store.cluster is not None
    victim = redis_cluster.node_at(cache_store.cluster.masters[0])
    with httpx.Client(base_url=one.url, timeout=10) as client:
        assert client.get("/_gateway/ready").status_code == 200
        victim.kill()
        try:
            ready = client.get("/_gateway/ready")
            assert ready.status_code == 503 and ready.json()["down"] == ["cache.redis"], ready.json()
            # The limits, on the one Redis, hold exactly while the cache's shard is lost ...
            assert _limited(client, "carol") == [200] * LIMIT + [429] * 2
            for i in range(10):  # ... and every cached path answers, whichever shard it lives on
                assert client.get(f"/cached/lost{i}").status_code == 200
            # Its replica is promoted, and the cache's store is ready again.
            wait_for(lambda: client.get("/_gateway/ready").status_code == 200, timeout=30,
                     what="readiness after the replica's promotion")
            assert _limited(client, "dave") == [200] * LIMIT + [429] * 2
        finally:
            redis_cluster.restart(victim)
