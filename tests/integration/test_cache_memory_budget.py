"""The cache cannot starve the limiter: one Redis with maxmemory 20mb and noeviction (what the README
recommends), a caching route whose answers are 200 KB, and ~150 distinct URLs through it. With
cache.max_bytes below maxmemory the cache evicts its own least recently read entries, Redis never
refuses a write, and a rate limit of N admits exactly N afterwards. Without it (the control) Redis
fills up and refuses writes (OOM), which is what shows the set-up can fail; whether a rate-limit call
meets one of those refusals depends on when Redis is over the line (a 200 KB store call's own
buffer counts), so the control counts Redis's OOM replies rather than the limiter's log."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from app.config import parse_config
from tests.support import BackendServer, GatewayThread, RedisProcess

pytestmark = pytest.mark.redis

MB = 1024 * 1024
BODY = 200 * 1024
URLS = 150
LIMIT = 10


@pytest.fixture
def small_redis() -> Iterator[RedisProcess]:
    with RedisProcess(args=("--maxmemory", "20mb", "--maxmemory-policy", "noeviction")) as server:
        yield server


def _gateway(redis_url: str, backend: BackendServer, max_bytes: int | None) -> GatewayThread:
    return GatewayThread(parse_config({
        "redis": {"url": redis_url, "prefix": f"t{uuid.uuid4().hex[:8]}"},
        "router": {"routes": [
            {"path": "/bytes/*", "target": backend.url},
            {"path": "/status/*", "target": backend.url, "cache": {"enabled": False},
             "rate_limit": {"requests_per_minute": LIMIT}},
        ]},
        # Bodies kept as they come (the demo's bytes would compress to nothing): 200 KB an entry.
        "cache": {"max_size": 1000, "max_bytes": max_bytes, "compress_min_size": 64 * MB},
        "rate_limiter": {"default": {"requests_per_minute": 100_000, "requests_per_hour": None}},
    }, {}))


def _fill_then_limit(gateway: GatewayThread) -> list[int]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for i in range(URLS):
            answer = client.get(f"/bytes/{BODY}", params={"i": i})
            assert answer.status_code == 200 and len(answer.content) == BODY
        return [client.get("/status/200").status_code for _ in range(LIMIT + 5)]


@pytest.mark.parametrize("max_bytes", [8 * MB, None], ids=["max_bytes_8mb", "control_unbounded"])
def test_a_full_cache_leaves_the_limits_exact(small_redis: RedisProcess, backend: BackendServer,
                                              max_bytes: int | None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), _gateway(small_redis.url, backend, max_bytes) as gateway:
        statuses = _fill_then_limit(gateway)
        store = gateway.gateway.store
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            before = store.round_trips
            miss = http.get(f"/bytes/{BODY}", params={"i": "fresh"})
            between = store.round_trips
            hit = http.get(f"/bytes/{BODY}", params={"i": "fresh"})
            after = store.round_trips
        keys = gateway.gateway.orchestrator.cache_manager.keys
        client = redis.Redis(port=small_redis.port)
        stored = sum(int(client.hget(bucket.stats, "bytes") or 0) for bucket in keys.buckets)
        used = int(client.info("memory")["used_memory"])
        refused = int(client.info("errorstats").get("errorstat_OOM", {}).get("count", 0))
        client.close()
    failing_open = [r for r in caplog.records if "failing open" in r.getMessage()]
    if max_bytes is None:
        assert refused > 0  # the control: Redis filled up and refused writes
        return
    assert refused == 0
    assert failing_open == []
    assert not [r for r in caplog.records if "OOM" in r.getMessage()]
    assert statuses == [200] * LIMIT + [429] * 5
    # A stored miss that evicts to make room is still two round trips; a hit, one.
    assert (miss.headers["x-cache"], between - before) == ("MISS", 2)
    assert (hit.headers["x-cache"], after - between) == ("HIT", 1)
    # Full to its budget, not past it: each of the 16 buckets holds two answers in its 512 KB share.
    assert 6 * MB < stored <= max_bytes
    assert used < 20 * MB


def test_a_cache_on_a_redis_of_its_own_cannot_touch_the_limits(backend: BackendServer,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """cache.redis: the cache fills a small Redis of its own (no max_bytes: it runs out of room), while
    the limits, on the other Redis, stay exact and never see an OOM."""
    with RedisProcess() as limits_redis, \
            RedisProcess(args=("--maxmemory", "20mb", "--maxmemory-policy", "noeviction")) as cache_redis:
        config = parse_config({
            "redis": {"url": limits_redis.url, "prefix": "own"},
            "router": {"routes": [
                {"path": "/bytes/*", "target": backend.url},
                {"path": "/status/*", "target": backend.url, "cache": {"enabled": False},
                 "rate_limit": {"requests_per_minute": LIMIT}},
            ]},
            "cache": {"max_size": 1000, "compress_min_size": 64 * MB, "redis": {"url": cache_redis.url, "prefix": "own"}},
            "rate_limiter": {"default": {"requests_per_minute": 100_000, "requests_per_hour": None}},
        }, {})
        with caplog.at_level(logging.INFO), GatewayThread(config) as gateway:
            statuses = _fill_then_limit(gateway)
            # Room again on the cache's Redis for the hit below, which checks round trips: left at
            # its limit, whether it takes one more small entry turns on a few hundred bytes (the
            # scripts' own text counts in its memory).
            with redis.Redis(port=cache_redis.port) as room:
                room.config_set("maxmemory", "0")
            stores = gateway.gateway.store, gateway.gateway.cache_store
            with httpx.Client(base_url=gateway.url, timeout=10) as http:
                http.get("/bytes/100", params={"i": "small"})
                before = [store.round_trips for store in stores]
                hit = http.get("/bytes/100", params={"i": "small"})
                after = [store.round_trips for store in stores]
        limits_client, cache_client = redis.Redis(port=limits_redis.port), redis.Redis(port=cache_redis.port)
        limits_keys = [key.decode() for key in limits_client.keys("*")]
        cache_keys = [key.decode() for key in cache_client.keys("*")]
        cache_refused = int(cache_client.info("errorstats").get("errorstat_OOM", {}).get("count", 0))
        limits_refused = int(limits_client.info("errorstats").get("errorstat_OOM", {}).get("count", 0))
        limits_client.close()
        cache_client.close()
    assert statuses == [200] * LIMIT + [429] * 5
    assert cache_refused > 0 and limits_refused == 0  # the cache ran out of room, on its own Redis only
    assert not [r for r in caplog.records if "failing open" in r.getMessage()]
    assert limits_keys and not [key for key in limits_keys if key.startswith("own:cache:")]
    assert [key for key in cache_keys if key.startswith("own:cache:")]
    assert not [key for key in cache_keys if key.startswith("own:rl:")]
    # The start check looked at the cache's Redis with the cache's budget (1000 x 1 MB > 20 MB).
    assert [r for r in caplog.records if r.levelno == logging.WARNING and "cache writes are refused" in r.getMessage()]
    # A hit: one batch on each store, sent at once.
    assert hit.headers["x-cache"] == "HIT"
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1]
