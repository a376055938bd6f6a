"""Random arrival times against both stores: no rolling window ever admits more than its limit,
the burst bucket never lets more through than capacity + refill, Retry-After is exact, and the
memory store and Redis agree on every decision.

Times are replayed through the script's test-only ``now`` argument (production uses Redis TIME).
"""

from __future__ import annotations

import asyncio
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import RateLimiterSection, RateLimitSpec
from app.rate_limiter import ApiGatewayRateLimiter
from app.ratelimit.limits import burst_interval_us
from app.store import MemoryStore
from app.store.redis import RedisStore

pytestmark = pytest.mark.redis

WINDOW_US = {"requests_per_second": 1_000_000, "requests_per_minute": 60_000_000,
             "requests_per_hour": 3_600_000_000, "requests_per_day": 86_400_000_000}


@st.composite
def specs(draw: st.DrawFn) -> RateLimitSpec:
    spec = RateLimitSpec(
        requests_per_second=draw(st.none() | st.integers(1, 4)),
        requests_per_minute=draw(st.none() | st.integers(1, 12)),
        requests_per_hour=draw(st.none() | st.integers(1, 30)),
        requests_per_day=draw(st.none() | st.integers(1, 40)),
    )
    if any(getattr(spec, f) is not None for f in WINDOW_US) and draw(st.booleans()):
        spec = spec.model_copy(update={"burst_size": draw(st.integers(1, 5))})
    return spec


# Gaps between arrivals: bursts (same microsecond, a few ms), bucket-scale steps, and jumps of
# seconds to hours, so every window both fills and drains.
gaps = st.one_of(
    st.just(0), st.integers(1, 5_000), st.integers(5_000, 400_000), st.integers(400_000, 5_000_000),
    st.integers(5_000_000, 200_000_000), st.integers(200_000_000, 5_000_000_000))


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def redis_limiter_store(redis_url: str, loop: asyncio.AbstractEventLoop) -> Iterator[RedisStore]:
    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}")
    loop.run_until_complete(store.start())
    yield store
    keys = loop.run_until_complete(store.redis.keys(f"{store.prefix}:*"))
    if keys:
        loop.run_until_complete(store.redis.delete(*keys))
    loop.run_until_complete(store.close())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs(), start=st.integers(0, 86_400_000_000), arrivals=st.lists(gaps, min_size=1, max_size=70),
       probe=st.lists(st.booleans(), min_size=70, max_size=70))
def test_windows_never_over_admit_and_stores_agree(
        loop: asyncio.AbstractEventLoop, redis_limiter_store: RedisStore, spec: RateLimitSpec, start: int,
        arrivals: list[int], probe: list[bool]) -> None:
    loop.run_until_complete(_replay(redis_limiter_store, spec, start, arrivals, probe))


async def _replay(redis_store: RedisStore, spec: RateLimitSpec, start: int, arrivals: list[int],
                  probe: list[bool]) -> None:
    section = RateLimiterSection(default=spec)
    on_memory = ApiGatewayRateLimiter(MemoryStore(), section)
    on_redis = ApiGatewayRateLimiter(redis_store, section)
    client = uuid.uuid4().hex
    now = 1_700_000_000_000_000 + start
    admitted: list[int] = []

    async def decide(at: int) -> bool:
        mem = await on_memory.check(client, now_us=at)
        red = await on_redis.check(client, now_us=at)
        assert mem == red, (at - now, mem, red)
        if mem.allowed:
            admitted.append(at)
        return mem.allowed

    for i, gap in enumerate(arrivals):
        now += gap
        state_ok = await decide(now)
        if not state_ok and probe[i]:
            # Retry-After is the truth: refused a millisecond before it, admitted at it.
            state = await on_redis.check(client, now_us=now)
            assert not state.allowed and state.retry_after_ms > 0
            if state.retry_after_ms > 1:
                assert not await decide(now + (state.retry_after_ms - 1) * 1000)
            now += state.retry_after_ms * 1000
            assert await decide(now)

    for field, length in WINDOW_US.items():
        limit = getattr(spec, field)
        if limit is None:
            continue
        for j, t in enumerate(admitted):  # every window (t - length, t] that ends at an admission
            inside = j + 1 - bisect_right(admitted, t - length)
            assert inside <= limit, (field, limit, inside)
    if spec.burst_size is not None:
        interval = burst_interval_us(spec)
        assert interval is not None
        for j, t in enumerate(admitted):  # any span [s, t] holds at most capacity + refilled tokens
            for i in range(j + 1):
                span = t - admitted[i]
                count = j + 1 - bisect_left(admitted, admitted[i])
                assert count <= spec.burst_size + span // interval, (spec, span, count)
