"""lua/activity_*.lua and their twins, on both stores: the fleet's busiest clients."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from app.control.activity import ClientActivity
from app.pipeline.exchange import Exchange
from app.store import ScriptCall, Store


def _exchange(client_id: str = "", header: bytes | None = None, addr: str = "10.0.0.7") -> Exchange:
    headers = [(b"x-client-id", header)] if header is not None else []
    return Exchange(method="GET", path="/", raw_path=b"/", query_string=b"", headers=headers,
                    client_addr=addr, client_id=client_id)


async def test_counts_from_several_replicas_add_up_busiest_first(store: Store) -> None:
    replica_a, replica_b = ClientActivity(store), ClientActivity(store)
    for client, n in (("alice", 3), ("bob", 1)):
        for _ in range(n):
            replica_a.admission_call(_exchange(client), None)
    for _ in range(4):
        replica_b.admission_call(_exchange(header=b"carol"), None)
    replica_b.admission_call(_exchange(client_id="alice"), None)
    replica_b.admission_call(_exchange(), None)
    await replica_a.flush()
    await replica_b.flush()
    assert not replica_a.pending and not replica_b.pending
    assert await replica_a.busiest() == [("alice", 4), ("carol", 4), ("bob", 1), ("ip:10.0.0.7", 1)]
    assert await replica_b.busiest(2) == [("alice", 4), ("carol", 4)]


async def test_only_the_busiest_are_kept(store: Store) -> None:
    activity = ClientActivity(store)
    keep = ScriptCall("activity_add", activity.keys, (60, 2, "a", 5, "b", 1, "c", 3, "d", 1))
    assert await store.run(keep) == [2]
    assert await activity.busiest() == [("a", 5), ("c", 3)]


async def _next_second() -> None:
    await asyncio.sleep(1.02 - time.time() % 1)


async def test_counts_roll_out_after_two_windows(store: Store) -> None:
    activity = ClientActivity(store, window=1)
    await _next_second()
    await store.run(activity.add_call(Counter(alice=3)))
    assert await activity.busiest() == [("alice", 3)]
    await _next_second()
    await store.run(activity.add_call(Counter(bob=1)))
    assert await activity.busiest() == [("alice", 3), ("bob", 1)]  # this window and the one before
    await _next_second()
    assert await activity.busiest() == [("bob", 1)]


async def test_close_returns_even_when_the_store_swallows_the_cancellation() -> None:
    """redis-py can turn a cancellation inside a read into a TimeoutError; closing must not hang
    (a replica's shutdown waits for it)."""
    from app.store import MemoryStore

    class SlowStore(MemoryStore):
        async def run(self, *calls: ScriptCall) -> list:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise TimeoutError("read timed out") from None
            return await super().run(*calls)

    activity = ClientActivity(SlowStore(), flush_every=0.01)
    activity.admission_call(_exchange("alice"), None)
    await activity.start()
    await asyncio.sleep(0.1)  # the loop is inside the store call now
    started = time.monotonic()
    await asyncio.wait_for(activity.close(), timeout=8)
    assert time.monotonic() - started < 5
