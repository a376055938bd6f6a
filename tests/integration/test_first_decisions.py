"""A replica's first decisions use the fleet's state, not defaults: a rate limiter that was not
started waits for its configs before its first decision. On a real Redis, with separate
connections as replicas have."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.config import RateLimiterSection
from app.rate_limiter import ApiGatewayRateLimiter
from app.store.redis import RedisStore

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
