"""The rate limiter as a library, on both stores (the ``store`` fixture runs each test on the
memory store and on a real Redis)."""

from __future__ import annotations

import asyncio
import hashlib
import time


from app.config import RateLimiterSection, RateLimitSpec, parse_config
from app.rate_limiter import ApiGatewayRateLimiter, RateLimitConfig
from app.router import ApiGatewayRouter
from app.store import Store

T0 = 1_800_000_000_000_000  # a replayed time in microseconds (tests only; the gateway uses TIME)
S = 1_000_000


async def test_seed_unit_test(store: Store) -> None:
    # The seed's test as written, plus await.
    limiter = ApiGatewayRateLimiter(store)
    client_id = "test_client"

    # Should allow initial requests
    for _ in range(60):
        assert await limiter.is_allowed(client_id, "/api/test")

    # Should block after limit
    assert not await limiter.is_allowed(client_id, "/api/test")

    # Reset and verify
    await limiter.reset_client(client_id)
    assert await limiter.is_allowed(client_id, "/api/test")


async def test_seed_usage_example(store: Store) -> None:
    limiter = ApiGatewayRateLimiter(store)
    enterprise_config = RateLimitConfig(requests_per_minute=100, requests_per_hour=5000, burst_size=20)
    await limiter.set_client_config("enterprise_client_123", enterprise_config)
    results = [await limiter.is_allowed("enterprise_client_123", "/api/v1/agents") for _ in range(25)]
    assert results.count(True) == 20  # the burst bucket, refilled at 100/60 per second
    stats = await limiter.get_client_stats("enterprise_client_123")
    assert stats == {"requests_this_minute": 20, "requests_this_hour": 20, "burst_tokens": 0}
    assert set(await limiter.get_client_stats("client_123")) == {"requests_this_minute", "requests_this_hour",
                                                                 "burst_tokens"}


async def test_refused_requests_are_not_counted_and_retry_after_is_true(store: Store) -> None:
    limiter = ApiGatewayRateLimiter(store, RateLimiterSection(default=RateLimitSpec(
        requests_per_minute=3, requests_per_hour=None)))
    for i in range(3):
        assert (await limiter.check("c", now_us=T0 + i * S)).allowed
    refused = await limiter.check("c", now_us=T0 + 10 * S)
    assert not refused.allowed and refused.refused_by == "m" and refused.remaining == 0
    # The first request's bucket (the second starting at T0) leaves the window 61 buckets later.
    assert refused.retry_after_ms == 51_000
    for _ in range(20):  # hammering while refused charges nothing
        assert not (await limiter.check("c", now_us=T0 + 20 * S)).allowed
    assert not (await limiter.check("c", now_us=T0 + 61 * S - 1)).allowed
    assert (await limiter.check("c", now_us=T0 + 61 * S)).allowed


async def test_all_limits_or_none_are_charged(store: Store) -> None:
    # A second limit of 2 and a minute limit of 5: a request the second refuses charges no minute.
    limiter = ApiGatewayRateLimiter(store, RateLimiterSection(default=RateLimitSpec(
        requests_per_second=2, requests_per_minute=5, requests_per_hour=None)))
    decisions = [(await limiter.check("c", now_us=T0 + i * 1000)).allowed for i in range(6)]
    assert decisions == [True, True, False, False, False, False]
    later = [(await limiter.check("c", now_us=T0 + 2 * S + i * 1000)).allowed for i in range(4)]
    assert later == [True, True, False, False]
    stats = await limiter.get_client_stats("c")
    assert stats["requests_this_minute"] == 4
    refused = await limiter.check("c", now_us=T0 + 4 * S)
    assert refused.allowed  # 5th of the minute
    refused = await limiter.check("c", now_us=T0 + 6 * S)
    assert not refused.allowed and refused.refused_by == "m"


async def test_burst_bucket_refills_at_the_minute_rate(store: Store) -> None:
    limiter = ApiGatewayRateLimiter(store, RateLimiterSection(default=RateLimitSpec(
        requests_per_minute=60, requests_per_hour=None, burst_size=10)))
    burst = [(await limiter.check("c", now_us=T0)).allowed for _ in range(15)]
    assert burst.count(True) == 10
    refused = await limiter.check("c", now_us=T0 + 100_000)
    assert refused.refused_by == "b" and refused.retry_after_ms == 900 and refused.retry_after == 1
    assert not (await limiter.check("c", now_us=T0 + S - 1)).allowed
    assert (await limiter.check("c", now_us=T0 + S)).allowed
    assert not (await limiter.check("c", now_us=T0 + S + 1)).allowed


async def test_headers_describe_the_limit_with_the_least_left(store: Store) -> None:
    limiter = ApiGatewayRateLimiter(store)  # 60/minute, 1000/hour
    state = await limiter.check("c", now_us=T0)
    assert (state.limit, state.remaining) == (60, 59)
    assert state.reset == 61  # the minute is back to full once this request's bucket has left
    headers = dict(state.headers())
    assert headers[b"ratelimit-limit"] == b"60" and headers[b"x-ratelimit-remaining"] == b"59"


async def test_set_client_config_reaches_every_limiter_on_the_store(store: Store) -> None:
    if store.shared:
        from app.store.redis import RedisStore

        assert isinstance(store, RedisStore)
        other_store: Store = RedisStore(store.url, prefix=store.prefix)
        await other_store.start()
    else:
        other_store = store
    try:
        one = ApiGatewayRateLimiter(store)
        two = ApiGatewayRateLimiter(other_store)
        await one.start()
        await two.start()
        await asyncio.sleep(0.2)  # let the second replica's subscription attach
        await one.set_client_config("vip", RateLimitConfig(requests_per_minute=2, requests_per_hour=None))
        deadline = time.monotonic() + 2
        while two.manager.client_config("vip")["requests_per_minute"] != 2:
            assert time.monotonic() < deadline, "the change never reached the other replica"
            await asyncio.sleep(0.02)
        assert [await two.is_allowed("vip") for _ in range(3)] == [True, True, False]
        assert not await one.is_allowed("vip")  # one count, shared
        assert await one.get_client_stats("vip") == await two.get_client_stats("vip")

        await two.set_client_config("vip", None)  # back to the default
        deadline = time.monotonic() + 2
        while one.manager.client_config("vip")["requests_per_minute"] != 60:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        # A replica started later reads the runtime configs from the store.
        await one.set_client_config("gold", {"requests_per_minute": 7})
        three = ApiGatewayRateLimiter(other_store)
        await three.start()
        assert three.manager.client_config("gold")["requests_per_minute"] == 7
    finally:
        if other_store is not store:
            await other_store.close()


async def test_api_keys_are_kept_hashed(store: Store) -> None:
    config = parse_config({"rate_limiter": {
        "tiers": {"gold": {"requests_per_minute": 600}},
        "api_keys": [{"key": "file-key-0123456789", "client_id": "acme", "tier": "gold"}]}})
    limiter = ApiGatewayRateLimiter(store, config.rate_limiter)
    await limiter.start()
    key = await limiter.manager.create_api_key("beta", tier="gold")
    identity = limiter.identify([(b"x-api-key", key.encode())], "10.0.0.1")
    assert (identity.client_id, identity.tier, identity.source) == ("beta", "gold", "api_key")
    assert limiter.identify([(b"x-api-key", b"file-key-0123456789")], "10.0.0.1").client_id == "acme"
    stored = await store.hgetall(limiter.manager.api_keys_key)
    assert list(stored) == [hashlib.sha256(key.encode()).hexdigest().encode()]
    assert key.encode() not in b"".join(stored.values())
    assert limiter.manager.spec_for("beta", "gold").requests_per_minute == 600
    assert await limiter.manager.revoke_api_key(key)
    assert limiter.identify([(b"x-api-key", key.encode())], "10.0.0.1").source == "ip"


async def test_route_limit_applies_with_the_clients(store: Store) -> None:
    limiter = ApiGatewayRateLimiter(store)  # the client: 60/minute
    router = ApiGatewayRouter()
    route = router.add_route("/tight", "GET", "http://127.0.0.1:9", rate_limit={"requests_per_minute": 2})
    plan = limiter.plan("c", None, route)
    assert plan.names == ("m", "h", "route:m")  # the route names one limit; its defaults add none
    assert plan.call is not None
    replies = [await store.call(plan.call.script, plan.call.keys, plan.call.args) for _ in range(3)]
    assert [r[0] for r in replies] == [1, 1, 0]
    assert replies[2][5] == 3  # refused by the route's limit...
    assert (await limiter.get_client_stats("c"))["requests_this_minute"] == 2  # ...and not charged
    assert await limiter.is_allowed("c")  # other routes still admit the client
    await limiter.reset_client("c")
    assert (await store.call(plan.call.script, plan.call.keys, plan.call.args))[0] == 1
