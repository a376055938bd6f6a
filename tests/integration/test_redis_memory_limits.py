"""At start the gateway reads maxmemory and maxmemory-policy from each master and warns when a full
Redis can drop rate-limit keys or when the cache's budget can fill it (issue: the cache must not
starve the limiter). Each test runs its own redis-server; the one at 6379 is never reconfigured."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from app.config import GatewayConfig, SentinelSection
from app.pipeline.orchestrator import ApiGatewayOrchestrator
from app.store.memory_limits import MemoryLimit, memory_warnings
from app.store.redis import RedisStore
from tests.redis_topologies import RedisClusterProcesses, SentinelProcesses
from tests.support import RedisProcess

MB = 1024 * 1024
EVICTING = ["allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu", "volatile-random",
            "volatile-ttl"]


@pytest.fixture(scope="module")
def small_redis() -> Iterator[RedisProcess]:
    with RedisProcess(args=("--maxmemory", "20mb", "--maxmemory-policy", "noeviction")) as server:
        yield server


def _configure(server: RedisProcess, maxmemory: str, policy: str) -> None:
    client = redis.Redis(port=server.port)
    client.config_set("maxmemory", maxmemory)
    client.config_set("maxmemory-policy", policy)
    client.close()


def _config(url: str, **cache: object) -> GatewayConfig:
    return GatewayConfig.model_validate({"redis": {"url": url, "prefix": "memcheck"}, "cache": cache})


async def _start_logs(config: GatewayConfig, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="apigw.store"):
        orchestrator = ApiGatewayOrchestrator(config, RedisStore(config.redis.url, config.redis.prefix))
        await orchestrator.start()
        await orchestrator.close()
    return [r for r in caplog.records if r.name == "apigw.store" and ("maxmemory" in r.getMessage())]


@pytest.mark.parametrize("policy", EVICTING)
async def test_a_policy_that_evicts_is_warned_about(small_redis: RedisProcess, policy: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    _configure(small_redis, "20mb", policy)
    records = await _start_logs(_config(small_redis.url, max_bytes=8 * MB), caplog)
    assert [(r.levelno, f"maxmemory-policy {policy}" in r.getMessage()) for r in records] == [(logging.WARNING, True)]
    assert f"127.0.0.1:{small_redis.port}" in records[0].getMessage()


async def test_noeviction_with_a_cache_that_fits_is_quiet(small_redis: RedisProcess,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    _configure(small_redis, "20mb", "noeviction")
    assert await _start_logs(_config(small_redis.url, max_bytes=8 * MB), caplog) == []


async def test_a_cache_budget_past_maxmemory_is_warned_about(small_redis: RedisProcess,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    _configure(small_redis, "20mb", "noeviction")
    # The default: 1000 entries of up to 1 MB (16 buckets of 63: 1008), no byte budget.
    records = await _start_logs(_config(small_redis.url), caplog)
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert f"up to {1008 * MB} bytes" in records[0].getMessage() and f"maxmemory {20 * MB}" in records[0].getMessage()
    # A byte budget above maxmemory, and max_size x max_body_size under it: the smaller one counts.
    records = await _start_logs(_config(small_redis.url, max_bytes=30 * MB), caplog)
    assert len(records) == 1 and f"up to {30 * MB} bytes" in records[0].getMessage()
    assert await _start_logs(_config(small_redis.url, max_size=10, max_bytes=30 * MB), caplog) == []
    # A cache that is off takes no memory.
    assert await _start_logs(_config(small_redis.url, enabled=False), caplog) == []


async def test_unbounded_memory_is_quiet(small_redis: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
    for policy in ("noeviction", "allkeys-lru"):  # maxmemory 0: Redis never evicts
        _configure(small_redis, "0", policy)
        assert await _start_logs(_config(small_redis.url), caplog) == []


async def test_config_refused_is_noted_at_info(caplog: pytest.LogCaptureFixture) -> None:
    # As on managed Redis: CONFIG renamed away.
    with RedisProcess(args=("--maxmemory", "20mb", "--maxmemory-policy", "allkeys-lru",
                            "--rename-command", "CONFIG", "")) as server:
        records = await _start_logs(_config(server.url), caplog)
    assert [(r.levelno, "could not read" in r.getMessage()) for r in records] == [(logging.INFO, True)]


async def test_each_cluster_master_is_read(redis_cluster: RedisClusterProcesses) -> None:
    store = RedisStore(cluster_nodes=redis_cluster.seeds, prefix="memcheck")
    await store.start()
    try:
        limits = await store.memory_limits()
    finally:
        await store.close()
    assert limits is not None and len(limits) == 3
    assert store.cluster is not None
    assert sorted(limit.address for limit in limits) == sorted(store.cluster.masters)


def test_the_smallest_bounded_master_bounds_the_cache() -> None:
    limits = [MemoryLimit("a:1", 0, "noeviction"), MemoryLimit("b:1", 10 * MB, "noeviction"),
              MemoryLimit("c:1", 50 * MB, "noeviction")]
    assert memory_warnings(limits, 20 * MB)[0].count("redis at b:1") == 1
    assert memory_warnings(limits, 5 * MB) == []
    assert memory_warnings(limits, None) == []


async def test_a_sentinel_groups_master_is_read(redis_sentinel: SentinelProcesses) -> None:
    section = SentinelSection(nodes=redis_sentinel.sentinel_addresses, master=redis_sentinel.master_name)
    store = RedisStore(sentinel=section, prefix="memcheck")
    await store.start()
    try:
        limits = await store.memory_limits()
    finally:
        await store.close()
    assert limits is not None and [limit.address for limit in limits] == [redis_sentinel.master_address()]


def test_a_redis_of_the_caches_own_is_checked_for_room_not_for_its_policy() -> None:
    own = [MemoryLimit("cache:1", 20 * MB, "allkeys-lru")]
    assert memory_warnings(own, 8 * MB, cache_only=True) == []  # no rate-limit key there to evict
    [warning] = memory_warnings(own, 30 * MB, cache_only=True)
    assert "cache writes are refused" in warning and "rate limits" not in warning
