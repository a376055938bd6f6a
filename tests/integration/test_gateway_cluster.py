"""The gateway on a Redis Cluster named by a plain ``redis.url``, as a user would first try it: it
finds the cluster, limits hold, and readiness tells the truth."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from app.config import parse_config
from app.store.redis import RedisStore
from app.store.slots import key_slot
from tests.redis_topologies import RedisClusterProcesses
from tests.support import BackendServer, GatewayThread

pytestmark = pytest.mark.redis


def test_a_url_naming_a_cluster_node_enforces_limits_on_every_shard(
        redis_cluster: RedisClusterProcesses, backend: BackendServer) -> None:
    config = parse_config({
        "redis": {"url": redis_cluster.nodes[0].url, "prefix": f"t{uuid.uuid4().hex[:8]}"},
        "router": {"routes": [{"path": "/api/*", "target": backend.url}]},
        "cache": {"enabled": False},
        "rate_limiter": {"default": {"requests_per_minute": 5, "requests_per_hour": None},
                         "client_id_trusted_from": ["127.0.0.0/8"]},
    }, {})
    with GatewayThread(config) as gateway, httpx.Client(base_url=gateway.url) as client:
        assert client.get("/_gateway/ready").json()["status"] == "ready"
        clients = [f"user{i}" for i in range(5)]
        # Their tags fall on every shard.
        assert len({redis_cluster.master_of_slot(key_slot(f"x:{{{c}}}")).address for c in clients}) == 3
        for name in clients:
            statuses = [client.get("/api/x", headers={"X-Client-ID": name}).status_code for _ in range(7)]
            assert statuses == [200] * 5 + [429] * 2, name
        store = gateway.gateway.orchestrator.store
        assert isinstance(store, RedisStore) and store.cluster is not None


@pytest.mark.parametrize("topology", ["redis", "cluster"])
async def test_readiness_is_false_while_the_scripts_cannot_run(
        topology: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # No scripts at all (a package installed without them): nothing of the request path can run.
    if topology == "cluster":
        store = RedisStore(cluster_nodes=request.getfixturevalue("redis_cluster").seeds, scripts_dir=tmp_path)
    else:
        store = RedisStore(request.getfixturevalue("redis_url"), scripts_dir=tmp_path)
    await store.start()
    try:
        assert await store.ping()
        assert not await store.ready()
    finally:
        await store.close()


def test_round_trips_per_request_on_a_cluster(redis_cluster: RedisClusterProcesses, backend: BackendServer) -> None:
    """At most one round trip per rate-limited request and per cache hit, though a hit's batch (the
    client's limit, the cache lookup) reaches two shards."""
    config = parse_config({
        "redis": {"cluster_nodes": redis_cluster.seeds[:1], "prefix": f"t{uuid.uuid4().hex[:8]}"},
        "router": {"routes": [
            {"path": "/api/*", "target": backend.url, "cache": {"enabled": False}},
            {"path": "/cached/*", "target": backend.url, "cache": {"ttl": 60}},
        ]},
        "rate_limiter": {"default": {"requests_per_minute": 10_000, "requests_per_hour": None}},
    }, {})
    requests = 100
    with GatewayThread(config) as gateway, httpx.Client(base_url=gateway.url) as client:
        store = gateway.gateway.orchestrator.store
        assert isinstance(store, RedisStore) and store.cluster is not None
        cache_slot = gateway.gateway.orchestrator.cache_manager.bucket("/cached/r", b"").slot  # its bucket's
        # A client whose limit lives on another shard than the cache.
        name = next(f"u{i}" for i in range(1000) if store.cluster.owners[key_slot(store.key("rl", f"u{i}"))]
                    != store.cluster.owners[cache_slot])
        assert client.get("/cached/r", headers={"X-Client-ID": name}).headers["x-cache"] == "MISS"
        for path, expect in (("/api/x", None), ("/cached/r", "HIT")):
            started = time.monotonic()
            before, nodes_before = store.round_trips, sum(store.node_round_trips.values())
            for _ in range(requests):
                answer = client.get(path, headers={"X-Client-ID": name})
                assert answer.status_code == 200 and answer.headers.get("x-cache") == expect
            # The activity counts are flushed once a second: one round trip each, besides the requests.
            background = int(time.monotonic() - started) + 1
            assert store.round_trips - before <= requests + background, path
            if expect == "HIT":  # each round trip reached two nodes at once
                assert sum(store.node_round_trips.values()) - nodes_before >= 2 * requests
