"""The gateway on a Redis Cluster named by a plain ``redis.url``, as a user would first try it: it
finds the cluster, limits hold, and readiness tells the truth."""

from __future__ import annotations

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
        "rate_limiter": {"default": {"requests_per_minute": 5, "requests_per_hour": None}},
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
