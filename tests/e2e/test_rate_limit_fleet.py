"""Rate limits across a fleet: gateway replicas as separate processes on one real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import BackendServer, GatewayProcess, RedisProcess, replicas, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def _config(redis_url: str, backend: BackendServer, prefix: str, **rate_limiter: Any) -> dict[str, Any]:
    return {
        # Timeouts above what this shared 2-core machine's scheduling delays reach (load ~10): a
        # spurious timeout fails open (the policy), which is not what these tests measure; and a
        # request that did wait out a timeout shows as taking 2 s.
        "redis": {"url": redis_url, "prefix": prefix, "connect_timeout": 2.0, "socket_timeout": 2.0},
        "router": {"routes": [
            {"path": "/api/*", "target": backend.url},
            {"path": "/closed/*", "target": backend.url, "failure_policy": "fail_closed"},
        ]},
        "rate_limiter": {"default": {"requests_per_minute": 1000, "requests_per_hour": None}, **rate_limiter},
        "cache": {"enabled": False},
    }


@pytest.fixture(scope="module")
def module_backend() -> Iterator[BackendServer]:
    with BackendServer("fleet-backend") as server:
        yield server


@pytest.fixture(scope="module")
def fleet(redis_url: str, module_backend: BackendServer) -> Iterator[list[GatewayProcess]]:
    config = _config(redis_url, module_backend, f"t{uuid.uuid4().hex[:8]}", clients={
        "fifty": {"requests_per_minute": 50},
        "bursty": {"requests_per_minute": 60, "burst_size": 10},
    })
    with replicas(config, 3) as procs:
        yield procs


async def _burst(urls: list[str], count: int, headers: dict[str, str]) -> list[tuple[httpx.Response, float]]:
    """``count`` requests at once, spread over ``urls``; each answer with the time it came back."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def one(i: int) -> tuple[httpx.Response, float]:
            answer = await client.get(f"{urls[i % len(urls)]}/api/items/{i}", headers=headers)
            return answer, time.monotonic()
        return list(await asyncio.gather(*(one(i) for i in range(count))))


def test_three_replicas_admit_exactly_the_limit(fleet: list[GatewayProcess]) -> None:
    # Each replica's first request connects it to Redis and to the backend: done before the burst
    # (by another client), or a replica slower to start than the others under a loaded machine
    # could see the fifty admissions gone before its own first batch reached Redis.
    for replica in fleet:
        assert httpx.get(f"{replica.url}/api/items/warm", headers={"X-Client-ID": "warm-up"}).status_code == 200
    answers = [a for a, _ in asyncio.run(_burst([p.url for p in fleet], 300, {"X-Client-ID": "fifty"}))]
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 50, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(429) == 250
    for answer in answers:
        assert answer.headers["ratelimit-limit"] == "50"
        if answer.status_code == 429:
            retry = int(answer.headers["retry-after"])
            assert 1 <= retry <= 61  # the oldest admitted bucket leaves within the window (+1 bucket)
            body = answer.json()
            assert body["error"] == "rate limit exceeded" and body["retry_after"] == retry
            assert answer.headers["ratelimit-remaining"] == "0"
    # Every replica served some of each: the count is the fleet's, not a replica's.
    served = {a.url.port for a in answers if a.status_code == 200}
    assert len(served) == 3


def test_burst_of_ten_then_one_per_second(fleet: list[GatewayProcess]) -> None:
    urls = [p.url for p in fleet]
    started = time.monotonic()
    timed = asyncio.run(_burst(urls, 100, {"X-Client-ID": "bursty"}))
    took = time.monotonic() - started
    answers = [a for a, _ in timed]
    admitted = sum(a.status_code == 200 for a in answers)
    # 10 tokens, plus one per second the burst lasted (refill at 60/minute).
    assert 10 <= admitted <= 10 + int(took) + 1, (admitted, took)
    refused = [a for a in answers if a.status_code == 429]
    assert refused and all(a.headers["retry-after"] == "1" for a in refused)
    # The first admission happened between the start and the first 200 coming back; tokens come
    # back one per second from then, so the next admission is due (admitted - 10 + 1) s later.
    first_back = min(t for a, t in timed if a.status_code == 200)
    due = admitted - 10 + 1
    # Poll until admitted. The token came back after the last refused poll was sent and before
    # the admitted one returned; that span must meet "due seconds after the first admission".
    polls: list[tuple[float, float, int]] = []
    deadline = time.monotonic() + 4
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            sent = time.monotonic()
            status = client.get(f"{urls[0]}/api/next", headers={"X-Client-ID": "bursty"}).status_code
            polls.append((sent, time.monotonic(), status))
            if status == 200:
                break
            time.sleep(0.02)
    assert polls and polls[-1][2] == 200, "no admission within 4 s"
    token_after = polls[-2][0] if len(polls) > 1 else float("-inf")
    token_before = polls[-1][1]
    assert token_after <= first_back + due + 0.05, (token_after - started, first_back - started, due)
    assert token_before >= started + due - 0.05, (token_before - started, due)


def test_redis_stopped_during_traffic(module_backend: BackendServer) -> None:
    """No 500, nothing waits out a Redis timeout, and limiting is back within 2 s of Redis."""
    with RedisProcess() as server:
        config = _config(server.url, module_backend, "fail", clients={"f": {"requests_per_minute": 20}})
        with replicas(config, 2) as procs:
            asyncio.run(_traffic_through_an_outage(server, [p.url for p in procs]))


async def _traffic_through_an_outage(server: RedisProcess, urls: list[str]) -> None:
    log: list[tuple[float, str, int, float, bool]] = []  # (sent at, path, status, seconds, limited)

    async def one(client: httpx.AsyncClient, i: int, path: str) -> httpx.Response:
        sent = time.monotonic()
        answer = await client.get(f"{urls[i % len(urls)]}{path}", headers={"X-Client-ID": "f"})
        log.append((sent, path, answer.status_code, time.monotonic() - sent, "ratelimit-limit" in answer.headers))
        return answer

    async with httpx.AsyncClient(timeout=10) as client:
        before = [await one(client, i, "/api/x") for i in range(25)]
        assert [a.status_code for a in before].count(200) == 20

        server.stop()
        down_at = time.monotonic()
        i = 0
        while time.monotonic() - down_at < 1.5:  # bounded: ~1.5 s of traffic on a dead Redis
            opened, closed = await asyncio.gather(one(client, i, "/api/x"), one(client, i + 1, "/closed/x"))
            assert opened.status_code == 200 and "ratelimit-limit" not in opened.headers  # fail_open
            assert closed.status_code == 503 and closed.json()["error"] == "rate limiter unavailable"
            i += 2
            await asyncio.sleep(0.02)

        server.start()  # same port, an empty Redis
        up_at = time.monotonic()
        resumed_at = limited_at = None
        while time.monotonic() - up_at < 5 and limited_at is None:
            answer = await one(client, i, "/api/x")
            i += 1
            if resumed_at is None and "ratelimit-limit" in answer.headers:
                resumed_at = time.monotonic()
            if answer.status_code == 429:
                limited_at = time.monotonic()
            await asyncio.sleep(0.01)

    statuses = {status for _, _, status, _, _ in log}
    assert 500 not in statuses and statuses <= {200, 429, 503}, statuses
    slowest = max(seconds for _, _, _, seconds, _ in log)
    assert slowest < 1.0, f"a request waited {slowest:.2f}s (a Redis timeout here is 2 s)"
    assert resumed_at is not None and resumed_at - up_at < 2.0, "limiting did not resume within 2 s"
    assert limited_at is not None  # and it limits again: 20 admitted on the fresh Redis, then 429


def test_set_client_config_reaches_every_replica(fleet: list[GatewayProcess], redis_url: str) -> None:
    # The library call on one process (this one) changes the limit the replicas enforce.
    from app.rate_limiter import ApiGatewayRateLimiter, RateLimitConfig
    from app.store.redis import RedisStore

    prefix = yaml_prefix(fleet[0])

    async def change() -> None:
        store = RedisStore(redis_url, prefix=prefix)
        await store.start()
        try:
            limiter = ApiGatewayRateLimiter(store)
            await limiter.set_client_config("late", RateLimitConfig(requests_per_minute=3, requests_per_hour=None))
        finally:
            await store.close()

    asyncio.run(change())
    for proc in fleet:
        wait_for(lambda p=proc: httpx.get(f"{p.url}/api/probe", headers={"X-Client-ID": "late"})
                 .headers.get("ratelimit-limit") == "3", timeout=2, what=f"new limit on {proc.url}")


def yaml_prefix(proc: GatewayProcess) -> str:
    import yaml

    return str(yaml.safe_load(proc.config_path.read_text())["redis"]["prefix"])
