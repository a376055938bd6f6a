"""A stored miss answers the client before its entry is stored; the fill lock, held until the store
lands, keeps the key's other requests (this replica's and another's on the same Redis) waiting for
the entry instead of going to the backend.

Each replica's store holds back its cache stores (the ``cache_set`` script's batches, nothing else)
until the test opens a gate: the window in which the answer is out and the entry is not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from app.config import parse_config
from app.edge.proxy import ProxyApp
from app.pipeline.orchestrator import ApiGatewayOrchestrator
from app.store import ScriptCall, Store
from app.store.memory import MemoryStore
from app.store.redis import RedisStore
from tests.support import BackendServer, metric_value


class Gated(Store):
    """A store whose batches carrying one of ``held`` (a cache store) wait for ``gate``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held = frozenset({"cache_set"})
        self.gate = asyncio.Event()
        self.gate.set()
        self.stores_held = 0
        self.stores_landed = 0

    async def run_each(self, *calls: ScriptCall) -> list[Any]:
        if not any(call.script in self.held for call in calls):
            return await super().run_each(*calls)
        self.stores_held += 1
        await self.gate.wait()
        replies = await super().run_each(*calls)
        self.stores_landed += 1
        return replies


class GatedStore(Gated, RedisStore):
    """One Redis or a Redis Cluster."""


class GatedMemoryStore(Gated, MemoryStore):
    """The in-process store: replicas sharing one stand for a fleet on one Redis."""


@dataclass
class Replica:
    orchestrator: ApiGatewayOrchestrator
    store: Gated
    client: httpx.AsyncClient
    closed: bool = False

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(path)

    async def answered(self, path: str) -> httpx.Response:
        """GET, bounded: an answer that waited for a held store would never come."""
        return await asyncio.wait_for(self.client.get(path), 10)

    def waiting_for_fills(self) -> int:
        return len(self.orchestrator.cache_stage.waiters._events)


async def _replica(config: Any, url: str, prefix: str) -> Replica:
    return await _replica_on(config, GatedStore(url, prefix=prefix))


async def _replica_on(config: Any, store: Gated) -> Replica:
    orchestrator = ApiGatewayOrchestrator(config, store)
    await orchestrator.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=ProxyApp(orchestrator)),
                               base_url="http://gateway", timeout=30)
    return Replica(orchestrator, store, client)


@pytest.fixture
async def fleet(backend: BackendServer, redis_url: str, key_prefix: str,
                redis_client: redis.Redis) -> AsyncIterator[list[Replica]]:
    """Two replicas on one Redis (``redis_client`` removes the test's keys afterwards)."""
    config = parse_config({
        "redis": {"prefix": key_prefix},
        "cache": {"lock_wait": 20},  # far past the test's window: a waiter never gives up on it
        "router": {"routes": [{"path": "/headers/*", "target": backend.url, "cache": {"ttl": 60}}]},
    }, {})
    replicas = [await _replica(config, redis_url, key_prefix) for _ in range(2)]
    yield replicas
    for replica in replicas:
        replica.store.gate.set()
        await replica.client.aclose()
        if not replica.closed:
            await replica.orchestrator.close()


async def _until(predicate: Any, what: str) -> None:
    """Until ``predicate()``, checked at each step of the loop; a coarse bound, never the assertion."""
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never: {what}")


async def test_the_answer_goes_out_while_the_store_is_held(fleet: Sequence[Replica], backend: BackendServer) -> None:
    a, _ = fleet
    a.store.gate.clear()
    first = await a.answered("/headers/r")
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    assert first.json()["n"] == 1
    # The answer is out, and its store cannot have landed: it is sent, and held.
    await _until(lambda: a.store.stores_held == 1, "the store is sent")
    assert a.store.stores_landed == 0
    a.store.gate.set()
    await a.orchestrator.cache_stage.filler.settled()
    assert a.store.stores_landed == 1
    again = await a.get("/headers/r")
    assert again.headers["x-cache"] == "HIT" and again.json() == first.json()
    assert backend.hits["/headers/r"] == 1


async def test_requests_for_the_key_on_any_replica_wait_for_the_held_store(
        fleet: Sequence[Replica], backend: BackendServer) -> None:
    a, b = fleet
    a.store.gate.clear()
    first = await a.answered("/headers/k")
    assert first.headers["x-cache"] == "MISS"
    same = asyncio.create_task(a.get("/headers/k"))
    other = asyncio.create_task(b.get("/headers/k"))
    # Both looked the key up, found its fill lock held, and wait for the fill.
    await _until(lambda: a.waiting_for_fills() == 1 and b.waiting_for_fills() == 1, "both replicas wait")
    assert not same.done() and not other.done()
    assert a.store.stores_landed == 0 and backend.hits["/headers/k"] == 1
    a.store.gate.set()  # the store lands: it releases the lock and announces the fill
    answers = await asyncio.wait_for(asyncio.gather(same, other), 15)
    for answer in answers:
        assert answer.status_code == 200 and answer.headers["x-cache"] == "HIT"
        assert answer.json() == first.json()
    assert backend.hits["/headers/k"] == 1  # one backend request for three clients


async def test_a_purge_still_lands_before_its_answer(fleet: Sequence[Replica], backend: BackendServer) -> None:
    """An unsafe request's invalidation is not sent after the answer as a store is: the answer waits
    for it, and once it is out the entry is gone on every replica."""
    a, b = fleet
    assert (await a.get("/headers/p")).headers["x-cache"] == "MISS"
    await a.orchestrator.cache_stage.filler.settled()
    assert (await b.get("/headers/p")).headers["x-cache"] == "HIT"
    b.store.held = frozenset({"cache_purge"})
    b.store.gate.clear()
    written = asyncio.create_task(b.client.post("/headers/p", json={}))
    await _until(lambda: b.store.stores_held == 1, "the purge is sent")
    assert not written.done()  # the answer waits for the purge
    b.store.gate.set()
    assert (await asyncio.wait_for(written, 10)).status_code == 200
    assert (await a.get("/headers/p")).headers["x-cache"] == "MISS"
    assert backend.hits["/headers/p"] == 3  # two GETs and the POST


async def test_a_shutdown_with_a_store_held_finishes(fleet: Sequence[Replica]) -> None:
    a, _ = fleet
    a.store.gate.clear()
    assert (await a.answered("/headers/s")).headers["x-cache"] == "MISS"
    await _until(lambda: a.store.stores_held == 1, "the store is sent")
    # The held store is cancelled, not waited for: a coarse bound, far above stop_tasks' own.
    a.closed = True
    await asyncio.wait_for(a.orchestrator.close(), 10)
    assert a.store.stores_landed == 0


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.redis)])
async def any_fleet(request: pytest.FixtureRequest, backend: BackendServer,
                    key_prefix: str) -> AsyncIterator[list[Replica]]:
    """Two replicas on one store: the memory store (both on one), one Redis or a Redis Cluster."""
    config = parse_config({
        "redis": {"prefix": key_prefix},
        "cache": {"lock_wait": 20},
        "router": {"routes": [{"path": "/headers/*", "target": backend.url, "cache": {"ttl": 60}}]},
    }, {})
    if request.param == "memory":
        shared = GatedMemoryStore(prefix=key_prefix)
        stores: list[Gated] = [shared, shared]
    else:
        request.getfixturevalue("redis_client")  # removes the test's keys afterwards
        if request.param == "cluster":
            seeds = request.getfixturevalue("redis_cluster").seeds
            stores = [GatedStore(cluster_nodes=seeds, prefix=key_prefix) for _ in range(2)]
        else:
            url = request.getfixturevalue("redis_url")
            stores = [GatedStore(url, prefix=key_prefix) for _ in range(2)]
    replicas = [await _replica_on(config, store) for store in stores]
    yield replicas
    for replica in replicas:
        replica.store.gate.set()
        await replica.client.aclose()
        await replica.orchestrator.close()


async def test_a_write_during_a_fill_refuses_its_store(any_fleet: Sequence[Replica], backend: BackendServer) -> None:
    """A miss answered before a write to its URI, whose store lands after the write (through the
    other replica) was answered: the store is refused, so the next read goes to the backend and
    gets what the write left, never the answer from before it."""
    a, b = any_fleet
    refused = metric_value("apigw_cache_stores_refused_total", route="* /headers/*")
    a.store.gate.clear()
    before = await a.answered("/headers/w")
    assert before.headers["x-cache"] == "MISS" and before.json()["n"] == 1
    await _until(lambda: a.store.stores_held == 1, "the store is sent")
    written = await asyncio.wait_for(b.client.post("/headers/w", json={}), 10)
    assert written.status_code == 200
    assert a.store.stores_landed == 0  # the write's answer is out; the fill's store is not in yet
    a.store.gate.set()
    await a.orchestrator.cache_stage.filler.settled()
    assert a.store.stores_landed == 1
    # Counted where an operator sees it: stores refused, by route.
    assert metric_value("apigw_cache_stores_refused_total", route="* /headers/*") == refused + 1
    after = await a.get("/headers/w")
    assert after.headers["x-cache"] == "MISS", "the answer from before the write was cached"
    assert after.json()["n"] == 3 and after.json() != before.json()
    assert backend.hits["/headers/w"] == 3  # the GET, the POST, the GET after it
    await a.orchestrator.cache_stage.filler.settled()
    again = await b.get("/headers/w")  # the read after the write is what is kept now
    assert again.headers["x-cache"] == "HIT" and again.json() == after.json()
    assert metric_value("apigw_cache_stores_refused_total", route="* /headers/*") == refused + 1  # that one was kept


async def test_a_write_frees_the_waiters_of_a_fill(any_fleet: Sequence[Replica], backend: BackendServer) -> None:
    """Requests waiting for a fill whose store is held are woken by a write to the URI: they fetch
    again (the fill will not be stored) rather than wait for a store that is refused."""
    a, b = any_fleet
    a.store.gate.clear()
    assert (await a.answered("/headers/v")).headers["x-cache"] == "MISS"
    waiting = asyncio.create_task(b.get("/headers/v"))
    await _until(lambda: b.waiting_for_fills() == 1, "a request waits for the fill")
    assert (await asyncio.wait_for(b.client.post("/headers/v", json={}), 10)).status_code == 200
    answer = await asyncio.wait_for(waiting, 10)  # before the held store lands
    assert answer.headers["x-cache"] == "MISS" and answer.json()["n"] == 3
    assert a.store.stores_landed == 0
