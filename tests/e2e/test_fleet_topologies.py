"""Three gateway replicas (processes) on a real Redis Cluster and on a real Sentinel group: exact
limits, the shared cache, circuits and config changes, and what happens while a master dies, a
Sentinel fails over or a slot migrates under load."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from app.store.slots import key_slot
from tests.redis_topologies import RedisClusterProcesses, SentinelProcesses
from tests.support import BackendServer, GatewayProcess, replicas, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

TOKEN = "topology-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
# The slots a reshard moves (redis-cli moves a source's lowest slots first; slot 0 is always a
# master's lowest), and clients whose limits live in them, each with a minute and an hour window
# (two keys of one slot: a script over them meets TRYAGAIN while they are split between nodes).
MIGRATED_SLOTS = 64
MIGRATING = [name for name in (f"mig{i}" for i in range(100_000)) if key_slot(f"x:{{{name}}}") < MIGRATED_SLOTS][:4]


def _config(redis: dict[str, Any], backend: BackendServer) -> dict[str, Any]:
    return {
        # Timeouts above this shared machine's scheduling delays: a dead master refuses connections
        # at once, so these never decide how long a request waits.
        "redis": {**redis, "prefix": f"t{uuid.uuid4().hex[:8]}", "connect_timeout": 2.0, "socket_timeout": 2.0},
        "admin": {"token": TOKEN},
        "router": {"routes": [{"id": "api", "path": "/api/*", "target": backend.url, "cache": {"enabled": False}},
                              {"id": "cached", "path": "/c/*", "target": backend.url, "strip_prefix": True}]},
        "rate_limiter": {"default": {"requests_per_minute": 100_000, "requests_per_hour": None},
                         "clients": {"fifty": {"requests_per_minute": 50},
                                     **{name: {"requests_per_minute": 50, "requests_per_hour": 1000}
                                        for name in MIGRATING}},
                         # The test's clients name themselves with X-Client-ID from this machine.
                         "client_id_trusted_from": ["127.0.0.0/8"]},
        # A generous lock_wait: on a loaded machine a cold replica's first fetch can take seconds.
        "cache": {"lock_wait": 20},
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


# -- the shared cache, circuits and config changes ----------------------------------------------------

FLEETS = ["cluster_fleet", "sentinel_fleet"]


@pytest.fixture
def fleet(request: pytest.FixtureRequest) -> list[GatewayProcess]:
    fleet: list[GatewayProcess] = request.getfixturevalue(request.param)
    return fleet


@pytest.mark.parametrize("fleet", FLEETS, indirect=True)
def test_a_fill_on_one_replica_is_a_hit_on_the_others(fleet: list[GatewayProcess],
                                                       module_backend: BackendServer) -> None:
    path = f"/c/headers/{uuid.uuid4().hex[:8]}?X-Thing=1"
    first = httpx.get(fleet[0].url + path, timeout=10)
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    for replica in fleet[1:]:
        answer = httpx.get(replica.url + path, timeout=10)
        assert answer.headers["x-cache"] == "HIT"
        assert answer.content == first.content and answer.headers["x-thing"] == "1"
    assert module_backend.hits[path.split("?")[0].removeprefix("/c")] == 1


def _circuit_state(gateway: GatewayProcess, name: str) -> str:
    status = httpx.get(f"{gateway.url}/_gateway/status", headers=ADMIN, timeout=5).json()
    return next((item["state"] for item in status["circuits"]["items"] if item["name"] == name), "unknown")


def _served(replica: GatewayProcess, path: str) -> bool:
    return httpx.get(replica.url + path, timeout=5).status_code == 200


def _add_fragile_route(fleet: list[GatewayProcess], backend: BackendServer) -> str:
    """A route with a circuit breaker, added through the admin API of replica A: served by every
    replica within 3 s (the config change's event, or the version poll)."""
    name = f"fragile{uuid.uuid4().hex[:6]}"
    added = httpx.post(f"{fleet[0].url}/_gateway/routes", headers=ADMIN, timeout=10, json={
        "id": name, "path": f"/{name}/*", "target": backend.url, "strip_prefix": True,
        "cache": {"enabled": False}, "circuit_breaker": {"failure_threshold": 3, "recovery_timeout": 60}})
    assert added.status_code == 201, added.text
    changed = time.monotonic()
    for replica in fleet:
        wait_for(lambda r=replica: _served(r, f"/{name}/ok"), timeout=10, interval=0.02,
                 what=f"the new route on {replica.url}")
    took = time.monotonic() - changed
    print(f"route added through A served by all 3 replicas after {took:.2f} s")
    assert took < 3
    return name


def _opened_on_one_is_open_on_all(fleet: list[GatewayProcess], name: str) -> None:
    """3 failures through replica A open the circuit; the others learn it from the event (their
    safety-net re-read comes every 5 s, so seeing it within 2 s is the event's doing)."""
    for _ in range(3):
        assert httpx.get(f"{fleet[0].url}/{name}/status/500", timeout=10).status_code == 500
    opened = time.monotonic()
    wait_for(lambda: all(_circuit_state(g, name) == "open" for g in fleet), timeout=10, interval=0.02,
             what="the circuit open on every replica")
    took = time.monotonic() - opened
    print(f"circuit opened through A open on all 3 replicas after {took:.2f} s")
    assert took < 2
    for replica in fleet:
        refused = httpx.get(f"{replica.url}/{name}/ok", timeout=10)
        assert refused.status_code == 503 and refused.json()["error"] == "circuit open"


@pytest.mark.parametrize("fleet", FLEETS, indirect=True)
def test_a_config_change_and_an_open_circuit_reach_every_replica(fleet: list[GatewayProcess],
                                                                  module_backend: BackendServer) -> None:
    _opened_on_one_is_open_on_all(fleet, _add_fragile_route(fleet, module_backend))


def _subscribers(cluster: RedisClusterProcesses, channel: str) -> dict[str, int]:
    """Each running master's subscribers of ``channel`` (PUBSUB NUMSUB answers for its own node)."""
    counts = {}
    for address in cluster.masters_now():
        with cluster.node_at(address).client() as client:
            counts[address] = int(client.execute_command("PUBSUB", "NUMSUB", channel)[1])
    return counts


def test_events_reach_every_replica_after_the_master_they_were_heard_on_dies(
        redis_cluster: RedisClusterProcesses, cluster_fleet: list[GatewayProcess],
        module_backend: BackendServer) -> None:
    prefix = yaml.safe_load(cluster_fleet[0].config_path.read_text())["redis"]["prefix"]
    subscribers = _subscribers(redis_cluster, f"{prefix}:events:config")
    carrier = max(subscribers, key=lambda address: subscribers[address])
    assert subscribers[carrier] >= 1, subscribers
    victim = redis_cluster.node_at(carrier)
    victim.kill()
    try:
        wait_for(lambda: carrier not in redis_cluster.masters_now(), timeout=30, what="the replica's promotion")
        _opened_on_one_is_open_on_all(cluster_fleet, _add_fragile_route(cluster_fleet, module_backend))
    finally:
        redis_cluster.restart(victim)


def test_events_reach_every_replica_after_a_sentinel_failover(
        redis_sentinel: SentinelProcesses, sentinel_fleet: list[GatewayProcess],
        module_backend: BackendServer) -> None:
    try:
        redis_sentinel.failover()
        _opened_on_one_is_open_on_all(sentinel_fleet, _add_fragile_route(sentinel_fleet, module_backend))
    finally:
        redis_sentinel.wait_healthy()


# -- a slot migrated during traffic -----------------------------------------------------------------


def _reshard(cluster: RedisClusterProcesses, source: str, target: str, slots: int) -> None:
    with cluster.node_at(source).client() as client:
        source_id = client.execute_command("CLUSTER", "MYID").decode()
    with cluster.node_at(target).client() as client:
        target_id = client.execute_command("CLUSTER", "MYID").decode()
    subprocess.run(["redis-cli", "--cluster", "reshard", source, "--cluster-from", source_id,
                    "--cluster-to", target_id, "--cluster-slots", str(slots), "--cluster-yes"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)


def test_a_slot_migrated_during_traffic_costs_no_error_and_no_over_admission(
        redis_cluster: RedisClusterProcesses, cluster_fleet: list[GatewayProcess]) -> None:
    source = redis_cluster.master_of_slot(0).address
    target = next(address for address in redis_cluster.masters_now() if address != source)
    for name in MIGRATING:  # their keys exist (and hold counts) before the migration starts
        for replica in cluster_fleet:
            assert httpx.get(f"{replica.url}/api/warm", headers={"X-Client-ID": name}).status_code == 200
    moved_at = 0.0

    def reshard() -> float:
        nonlocal moved_at
        moved_at = time.monotonic()
        _reshard(redis_cluster, source, target, MIGRATED_SLOTS)
        return time.monotonic()

    try:
        answers, done_at = _under_load(cluster_fleet, MIGRATING, reshard)
    finally:
        redis_cluster.wait_healthy()
    assert redis_cluster.master_of_slot(0).address == target  # the slots did move
    try:
        during = [a for a in answers if moved_at <= a.at <= done_at]
        print(f"reshard of {MIGRATED_SLOTS} slots took {done_at - moved_at:.2f} s; "
              f"{len(during)} requests during it, {len(answers)} in all")
        assert during
        assert all(a.status in (200, 429) for a in answers), {a.status for a in answers}
        assert all(a.enforced for a in answers)
        for name in MIGRATING:
            admitted = 3 + sum(1 for a in answers if a.client == name and a.status == 200)
            assert admitted == 50, (name, admitted)
    finally:
        _reshard(redis_cluster, target, source, MIGRATED_SLOTS)
        redis_cluster.wait_healthy()
