"""Three gateway replicas (processes) on a real Redis Cluster and on a real Sentinel group: exact
limits, and what happens while a master dies under load."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.store.slots import key_slot
from tests.redis_topologies import RedisClusterProcesses, SentinelProcesses
from tests.support import BackendServer, GatewayProcess, replicas

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def _config(redis: dict[str, Any], backend: BackendServer) -> dict[str, Any]:
    return {
        # Timeouts above this shared machine's scheduling delays: a dead master refuses connections
        # at once, so these never decide how long a request waits.
        "redis": {**redis, "prefix": f"t{uuid.uuid4().hex[:8]}", "connect_timeout": 2.0, "socket_timeout": 2.0},
        "router": {"routes": [{"path": "/api/*", "target": backend.url}]},
        "rate_limiter": {"default": {"requests_per_minute": 100_000, "requests_per_hour": None},
                         "clients": {"fifty": {"requests_per_minute": 50}},
                         # The test's clients name themselves with X-Client-ID from this machine.
                         "client_id_trusted_from": ["127.0.0.0/8"]},
        "cache": {"enabled": False},
    }


@pytest.fixture(scope="module")
def module_backend() -> Iterator[BackendServer]:
    with BackendServer("topology-backend") as server:
        yield server


@pytest.fixture(scope="module")
def cluster_fleet(redis_cluster: RedisClusterProcesses, module_backend: BackendServer) -> Iterator[list[GatewayProcess]]:
    with replicas(_config({"cluster_nodes": redis_cluster.seeds[:2]}, module_backend), 3) as procs:
        yield procs


@pytest.fixture(scope="module")
def sentinel_fleet(redis_sentinel: SentinelProcesses, module_backend: BackendServer) -> Iterator[list[GatewayProcess]]:
    sentinel = {"nodes": redis_sentinel.sentinel_addresses, "master": redis_sentinel.master_name}
    with replicas(_config({"sentinel": sentinel}, module_backend), 3) as procs:
        yield procs


def _exactly_fifty_of_300(fleet: list[GatewayProcess], client_id: str) -> None:
    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            return list(await asyncio.gather(*(
                client.get(f"{fleet[i % 3].url}/api/items/{i}", headers={"X-Client-ID": client_id})
                for i in range(300))))
    statuses = [a.status_code for a in asyncio.run(burst())]
    assert statuses.count(200) == 50, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(429) == 250


def test_three_replicas_on_a_cluster_admit_exactly_the_limit(cluster_fleet: list[GatewayProcess]) -> None:
    _exactly_fifty_of_300(cluster_fleet, "fifty")


def test_three_replicas_on_sentinel_admit_exactly_the_limit(sentinel_fleet: list[GatewayProcess]) -> None:
    _exactly_fifty_of_300(sentinel_fleet, "fifty")


@dataclass
class Answer:
    at: float
    client: str
    status: int
    enforced: bool  # the limit was checked (its headers are there), not skipped by fail_open


def _load(fleet: list[GatewayProcess], clients: list[str], stop: threading.Event, workers: int = 6) -> list[Answer]:
    """Requests from ``clients`` in turn, through every replica, until ``stop``."""
    answers: list[Answer] = []

    async def worker(n: int) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            i = n
            while not stop.is_set():
                name = clients[i % len(clients)]
                reply = await client.get(f"{fleet[i % 3].url}/api/x", headers={"X-Client-ID": name})
                answers.append(Answer(time.monotonic(), name, reply.status_code, "ratelimit-limit" in reply.headers))
                i += workers

    async def run() -> None:
        await asyncio.gather(*(worker(n) for n in range(workers)))
    asyncio.run(run())
    return answers


def _under_load(fleet: list[GatewayProcess], clients: list[str], action: Any) -> tuple[list[Answer], float]:
    """Load from a thread while ``action()`` runs here; the time ``action`` returned (the promotion)."""
    stop = threading.Event()
    result: list[list[Answer]] = []
    thread = threading.Thread(target=lambda: result.append(_load(fleet, clients, stop)))
    thread.start()
    try:
        time.sleep(0.5)
        done_at = action()
        time.sleep(4)  # 3 s to recover, and some more to see it hold
    finally:
        stop.set()
        thread.join(timeout=30)
    return result[0], done_at


def _client_on(cluster: RedisClusterProcesses, address: str, taken: set[str]) -> str:
    return next(name for name in (f"c{uuid.uuid4().hex[:6]}" for _ in range(10_000))
                if name not in taken and cluster.master_of_slot(key_slot(f"x:{{{name}}}")).address == address)


def test_a_killed_master_stops_only_its_own_keys_and_its_replica_takes_over(
        redis_cluster: RedisClusterProcesses, cluster_fleet: list[GatewayProcess]) -> None:
    lost, *kept = list(redis_cluster.masters_now())
    on_lost = _client_on(redis_cluster, lost, set())
    on_kept = [_client_on(redis_cluster, address, {on_lost}) for address in kept]
    victim = redis_cluster.node_at(lost)
    killed_at = 0.0

    def kill_and_wait_for_the_promotion() -> float:
        nonlocal killed_at
        killed_at = time.monotonic()
        victim.kill()
        while lost in redis_cluster.masters_now():
            time.sleep(0.02)
        return time.monotonic()

    try:
        answers, promoted_at = _under_load(cluster_fleet, [on_lost, *on_kept], kill_and_wait_for_the_promotion)
    finally:
        redis_cluster.restart(victim)
    assert answers and all(a.status == 200 for a in answers), {a.status for a in answers}  # no 5xx of ours
    # The other shards' limits never stopped.
    assert all(a.enforced for a in answers if a.client != on_lost)
    assert sum(1 for a in answers if a.client != on_lost and a.at > killed_at) > 20
    # The lost shard's keys failed open while it was gone, and are enforced again within 3 s of
    # the promotion.
    lost_answers = [a for a in answers if a.client == on_lost]
    assert all(a.enforced for a in lost_answers if a.at < killed_at)
    assert any(not a.enforced for a in lost_answers if killed_at < a.at < promoted_at)  # fail_open
    last_open = max((a.at for a in lost_answers if not a.enforced), default=promoted_at)
    print(f"lost shard: failed open {last_open - killed_at:.2f} s, enforced again "
          f"{max(0.0, last_open - promoted_at):.2f} s after the promotion")
    assert all(a.enforced for a in lost_answers if a.at > promoted_at + 3)
    assert any(a.at > promoted_at + 3 for a in lost_answers)


def test_a_sentinel_failover_is_followed_within_3_seconds(
        redis_sentinel: SentinelProcesses, sentinel_fleet: list[GatewayProcess]) -> None:
    def failover() -> float:
        redis_sentinel.failover()
        return time.monotonic()

    try:
        answers, switched_at = _under_load(sentinel_fleet, ["s1", "s2", "s3"], failover)
    finally:
        redis_sentinel.wait_healthy()
    assert answers and all(a.status == 200 for a in answers), {a.status for a in answers}
    assert all(a.enforced for a in answers if a.at > switched_at + 3)
    assert any(a.at > switched_at + 3 for a in answers)
    last_open = max((a.at for a in answers if not a.enforced), default=switched_at)
    print(f"sentinel failover: enforced again {max(0.0, last_open - switched_at):.2f} s after the switch")
