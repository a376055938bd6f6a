"""The health-check scripts (lua/health_*.lua) and their twins, on both stores."""

from __future__ import annotations

import asyncio

from app.store import Store


async def test_one_holder_of_the_lease_at_a_time(store: Store) -> None:
    lease = store.key("health", "r", "lease")
    assert await store.call("health_claim", [lease], ["a", 200]) == 1
    assert await store.call("health_claim", [lease], ["b", 200]) == 0
    assert await store.call("health_claim", [lease], ["a", 200]) == 1  # renewed by its holder
    await asyncio.sleep(0.25)
    assert await store.call("health_claim", [lease], ["b", 200]) == 1  # a stopped renewing
    assert await store.call("health_claim", [lease], ["a", 200]) == 0


async def test_thresholds_decide_health(store: Store) -> None:
    key = store.key("health", "r")
    url = "http://127.0.0.1:1"

    async def report(ok: int) -> list[int]:
        return list(await store.call("health_report", [key], [url, ok, 2, 3]))

    assert await report(0) == [1, 0]
    assert await report(0) == [1, 0]
    assert await report(1) == [1, 0]  # a success breaks the run of failures
    assert [await report(0) for _ in range(3)] == [[1, 0], [1, 0], [0, 1]]
    assert await report(1) == [0, 0]
    assert await report(1) == [1, 1]
    fields = await store.hgetall(key)
    assert fields[url.encode()] == b"1" and fields[f"{url}|ok".encode()] == b"2"
