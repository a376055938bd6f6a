"""Shared fixtures. Redis comes from REDIS_URL, else testcontainers (when a Docker engine answers),
else a redis-server started here on a free port; with none of these the run fails under CI."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from hypothesis import HealthCheck, settings

from app.store import MemoryStore, Store
from app.store.redis import RedisStore
from tests.redis_topologies import RedisClusterProcesses, SentinelProcesses
from tests.support import BackendServer, RedisProcess

# Property tests judge behaviour, never speed: no per-example deadline on a shared, noisy machine.
settings.register_profile("apigw", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("apigw")


def _testcontainers_redis() -> Iterator[str] | None:
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError:
        return None
    try:
        container = RedisContainer("redis:7.0")
        container.start()
    except Exception:  # no Docker engine here: fall back to a local binary
        return None

    def run() -> Iterator[str]:
        try:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
        finally:
            container.stop()
    return run()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    from_docker = _testcontainers_redis()
    if from_docker is not None:
        yield from from_docker
        return
    try:
        server = RedisProcess().start()
    except Exception as error:
        message = f"no Redis for the tests: set REDIS_URL, run Docker, or install redis-server ({error})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield server.url
    finally:
        server.stop()


def _no_topology(what: str, error: Exception) -> None:
    message = f"no {what} for the tests: install redis-server and redis-cli ({error})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    """A Redis Cluster of 3 masters and 3 replicas, started once per session by the first test that
    asks for it. A test that kills a node starts it again before it ends (``restart``)."""
    try:
        cluster = RedisClusterProcesses().start()
    except Exception as error:
        _no_topology("Redis Cluster", error)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelProcesses]:
    """A Sentinel group (1 master, 1 replica, 3 sentinels naming it ``mymaster``), once per session."""
    try:
        group = SentinelProcesses().start()
    except Exception as error:
        _no_topology("Sentinel group", error)
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
def key_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _on_cluster(request: pytest.FixtureRequest) -> bool:
    callspec = getattr(request.node, "callspec", None)
    return callspec is not None and callspec.params.get("store") == "cluster"


@pytest.fixture
def redis_client(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[redis.Redis]:
    """A plain client on the Redis the test's store uses (the cluster when the store is the cluster);
    it removes the test's keys afterwards."""
    client: redis.Redis
    if _on_cluster(request):
        cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
        client = redis.RedisCluster.from_url(cluster.nodes[0].url.removesuffix("/0"))  # type: ignore[assignment]
    else:
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield client
    for key in client.scan_iter(f"{key_prefix}:*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
async def redis_store(redis_url: str, key_prefix: str, redis_client: redis.Redis) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_url, prefix=key_prefix)
    await store.start()
    yield store
    await store.close()


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[Store]:
    """The contract fixture: each test using it runs on every back end (one Redis, a Redis Cluster)."""
    if request.param == "memory":
        yield MemoryStore(prefix=key_prefix)
        return
    request.getfixturevalue("redis_client")  # removes the test's keys afterwards
    if request.param == "cluster":
        store = RedisStore(cluster_nodes=request.getfixturevalue("redis_cluster").seeds, prefix=key_prefix)
    else:
        store = RedisStore(request.getfixturevalue("redis_url"), prefix=key_prefix)
    await store.start()
    yield store
    await store.close()


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    with BackendServer("backend-a") as server:
        yield server


@pytest.fixture
def backend_b() -> Iterator[BackendServer]:
    with BackendServer("backend-b") as server:
        yield server
