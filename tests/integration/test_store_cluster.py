"""The store on a real Redis Cluster (3 masters, 3 replicas) and a real Sentinel group: routing by
slot, one round trip per batch, redirections, lost shards, failovers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.config import RedisSection, SentinelSection
from app.store import StoreUnavailable, create_store
from app.store.base import ScriptCall
from app.store.redis import RedisStore
from app.store.slots import key_slot
from tests.redis_topologies import RedisClusterProcesses, SentinelProcesses
from tests.support import wait_for

pytestmark = pytest.mark.redis

# Records its call: SET KEYS[1] to ARGV[1], answer it and the INCR of KEYS[2] (when given).
_ECHO = """
redis.call('SET', KEYS[1], ARGV[1])
if KEYS[2] then return {ARGV[1], redis.call('INCR', KEYS[2])} end
return ARGV[1]
"""


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    (tmp_path / "echo.lua").write_text(_ECHO)
    return tmp_path


@pytest.fixture
async def cluster_store(redis_cluster: RedisClusterProcesses, scripts: Path) -> AsyncIterator[RedisStore]:
    store = RedisStore(cluster_nodes=redis_cluster.seeds[:1], prefix=f"t{uuid.uuid4().hex[:8]}",
                       scripts_dir=scripts, retry_after_failure=0.2)
    await store.start()
    yield store
    await store.close()


def _tags_on_each_master(cluster: RedisClusterProcesses, store: RedisStore) -> dict[str, str]:
    """One hash tag per master: master address -> tag."""
    owners = cluster.masters_now()
    tags: dict[str, str] = {}
    i = 0
    while len(tags) < len(owners):
        tag = f"tag{i}"
        slot = key_slot(store.key("x", tag))
        owner = next(a for a, ranges in owners.items() if any(s <= slot <= e for s, e in ranges))
        tags.setdefault(owner, tag)
        i += 1
    return tags


async def test_a_batch_over_three_shards_is_one_round_trip(redis_cluster: RedisClusterProcesses,
                                                           cluster_store: RedisStore) -> None:
    tags = _tags_on_each_master(redis_cluster, cluster_store)
    calls = [ScriptCall("echo", [cluster_store.key("x", tag)], [tag]) for tag in tags.values()]
    before, per_node = cluster_store.round_trips, cluster_store.node_round_trips
    assert await cluster_store.run(*calls) == [tag.encode() for tag in tags.values()]
    assert cluster_store.round_trips == before + 1
    after = cluster_store.node_round_trips
    assert sorted(after[a] - per_node.get(a, 0) for a in tags) == [1, 1, 1]
    for address, tag in tags.items():  # each call ran on the master of its slot
        with redis_cluster.node_at(address).client() as client:
            assert client.get(cluster_store.key("x", tag)) == tag.encode()


async def test_a_batch_over_open_connections_makes_no_task(redis_cluster: RedisClusterProcesses,
                                                          cluster_store: RedisStore) -> None:
    """The request path's cost on a cluster: a batch over three shards is written to each node and
    its replies awaited in turn, with no task per node (a task, and a gather's wakeups, cost more
    CPU than the rest of the split); a batch that was cancelled while waiting leaves nothing behind."""
    tags = _tags_on_each_master(redis_cluster, cluster_store)
    calls = [ScriptCall("echo", [cluster_store.key("x", tag)], [tag]) for tag in tags.values()]
    await cluster_store.run(*calls)  # every node's connection is open now
    loop = asyncio.get_running_loop()
    made: list[object] = []

    def counting(loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> asyncio.Task[object]:
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]

    loop.set_task_factory(counting)  # type: ignore[arg-type]
    try:
        for _ in range(3):
            assert await cluster_store.run(*calls) == [tag.encode() for tag in tags.values()]
    finally:
        loop.set_task_factory(None)
    assert made == []
    waiting = asyncio.ensure_future(cluster_store.run(*calls))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await cluster_store.run(*calls) == [tag.encode() for tag in tags.values()]  # the replies stayed in step


async def test_a_url_naming_a_cluster_node_is_used_as_its_seed(redis_cluster: RedisClusterProcesses,
                                                               scripts: Path) -> None:
    settings = RedisSection(url=redis_cluster.nodes[1].url, prefix=f"t{uuid.uuid4().hex[:8]}")
    store = create_store(settings)
    assert isinstance(store, RedisStore)
    store.scripts = type(store.scripts)(scripts)
    await store.start()
    try:
        assert store.cluster is not None and store.cluster.covered
        tags = _tags_on_each_master(redis_cluster, store)
        replies = await store.run(*(ScriptCall("echo", [store.key("x", t)], [t]) for t in tags.values()))
        assert replies == [t.encode() for t in tags.values()]
        assert await store.ready()
    finally:
        await store.close()


async def test_a_wrong_slot_map_is_corrected_by_moved(redis_cluster: RedisClusterProcesses,
                                                      cluster_store: RedisStore) -> None:
    cluster = cluster_store.cluster
    assert cluster is not None
    tags = _tags_on_each_master(redis_cluster, cluster_store)
    masters = list(tags)
    key = cluster_store.key("x", tags[masters[0]])
    cluster.owners[key_slot(key)] = masters[1]  # as after a migration we did not hear of
    assert await cluster_store.call("echo", [key], ["moved"]) == b"moved"
    assert cluster.owners[key_slot(key)] == masters[0]


async def test_scripts_are_loaded_again_on_a_node_that_forgot_them(redis_cluster: RedisClusterProcesses,
                                                                   cluster_store: RedisStore) -> None:
    tags = _tags_on_each_master(redis_cluster, cluster_store)
    for address in tags:
        with redis_cluster.node_at(address).client() as client:
            client.script_flush()  # what a promoted replica looks like to us
    calls = [ScriptCall("echo", [cluster_store.key("x", tag)], [tag]) for tag in tags.values()]
    assert await cluster_store.run(*calls) == [tag.encode() for tag in tags.values()]


def _node_id(cluster: RedisClusterProcesses, address: str) -> str:
    with cluster.node_at(address).client() as client:
        return client.execute_command("CLUSTER", "MYID").decode()


async def test_a_slot_in_migration_is_followed_with_ask_and_tryagain(redis_cluster: RedisClusterProcesses,
                                                                     cluster_store: RedisStore) -> None:
    masters = list(redis_cluster.masters_now())
    source, target = masters[0], masters[1]
    # A tag of its own whose slot holds no key yet: nobody else's keys are moved.
    tag = next(t for t in (uuid.uuid4().hex[:8] for _ in range(10_000))
               if redis_cluster.master_of_slot(key_slot(cluster_store.key("x", t))).address == source
               and redis_cluster.node_at(source).client().execute_command(
                   "CLUSTER", "COUNTKEYSINSLOT", key_slot(cluster_store.key("x", t))) == 0)
    slot = key_slot(cluster_store.key("x", tag))
    with redis_cluster.node_at(source).client() as src, redis_cluster.node_at(target).client() as dst:
        src_id, dst_id = _node_id(redis_cluster, source), _node_id(redis_cluster, target)
        old = cluster_store.key("x", tag, "old")
        src.set(old, 1)  # a key the migration has not moved yet
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        try:
            # A key the source no longer has: ASK, then the target runs it.
            new = cluster_store.key("x", tag, "new")
            assert await cluster_store.call("echo", [new], ["asked"]) == b"asked"
            assert cluster_store.cluster is not None
            assert cluster_store.cluster.owners[slot] == source  # ASK does not change the map
            # One key still on the source, one not: TRYAGAIN until the slot settles; given up
            # after a few rounds (never a wait for a timeout), then served once it has moved.
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await cluster_store.call("echo", [cluster_store.key("x", tag, "third"), old], ["x"])
            assert time.monotonic() - started < 0.5
            src.execute_command("MIGRATE", "127.0.0.1", redis_cluster.node_at(target).port, "", 0, 5000,
                                "KEYS", old)
            for node in (dst, src):  # the target first, as the cluster spec orders
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            reply = await cluster_store.call("echo", [cluster_store.key("x", tag, "third"), old], ["y"])
            assert reply == [b"y", 2]
            assert cluster_store.cluster.owners[slot] == target  # learnt from MOVED
        finally:  # the slot goes home (by a migration the other way: its owner's epoch goes up)
            for client in (src, dst):
                client.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
                for key in client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                    client.execute_command("ASKING")
                    client.delete(key)
            if redis_cluster.master_of_slot(slot).address == target:
                src.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", dst_id)
                dst.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", src_id)
                for client in (src, dst):
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", src_id)
            redis_cluster.wait_healthy()


async def test_a_lost_shard_fails_only_its_own_calls_and_its_replica_takes_over(
        redis_cluster: RedisClusterProcesses, cluster_store: RedisStore) -> None:
    tags = _tags_on_each_master(redis_cluster, cluster_store)
    lost, *kept = list(tags)
    calls = [ScriptCall("echo", [cluster_store.key("x", tags[a])], [tags[a]]) for a in [lost, *kept]]
    victim = redis_cluster.node_at(lost)
    victim.kill()
    try:
        started = time.monotonic()
        replies = await cluster_store.run_each(*calls)
        assert time.monotonic() - started < 0.5  # a refused connection, not a timeout
        assert isinstance(replies[0], StoreUnavailable)
        assert replies[1:] == [tags[a].encode() for a in kept]
        # The replica is promoted; the calls of the lost slots follow it soon after.
        wait_for(lambda: lost not in redis_cluster.masters_now(), timeout=30, what="the replica's promotion")
        promoted = time.monotonic()
        while True:
            replies = await cluster_store.run_each(*calls)
            if not isinstance(replies[0], StoreUnavailable):
                break
            assert replies[1:] == [tags[a].encode() for a in kept]  # the others never stopped
            assert time.monotonic() - promoted < 3, replies[0]
            await asyncio.sleep(0.05)
        assert replies == [tags[a].encode() for a in [lost, *kept]]
    finally:
        redis_cluster.restart(victim)


async def test_events_reach_every_replica_on_a_cluster(redis_cluster: RedisClusterProcesses, scripts: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    stores = [RedisStore(cluster_nodes=[seed], prefix=prefix, scripts_dir=scripts) for seed in redis_cluster.seeds[:3]]
    got: list[list[bytes]] = [[] for _ in stores]
    for store, inbox in zip(stores, got, strict=True):
        store.subscribe(store.channel("t"), inbox.append)
        await store.start()
    try:
        deadline = time.monotonic() + 5
        while not all(got) and time.monotonic() < deadline:  # the subscriptions attach in the background
            await stores[0].publish(stores[0].channel("t"), b"hello")
            await asyncio.sleep(0.05)
        assert all(inbox and inbox[0] == b"hello" for inbox in got)
    finally:
        for store in stores:
            await store.close()


# -- Sentinel ---------------------------------------------------------------------------------------


async def test_a_sentinel_store_follows_a_failover_within_3_seconds(redis_sentinel: SentinelProcesses,
                                                                    scripts: Path) -> None:
    settings = RedisSection(sentinel=SentinelSection(nodes=redis_sentinel.sentinel_addresses,
                                                     master=redis_sentinel.master_name),
                            prefix=f"t{uuid.uuid4().hex[:8]}")
    store = create_store(settings)
    assert isinstance(store, RedisStore)
    store.scripts = type(store.scripts)(scripts)
    await store.start()
    try:
        key = store.key("x", "s")
        assert await store.call("echo", [key], ["before"]) == b"before"
        assert await store.ready()
        await store.set(store.key("plain", "s"), b"v")
        assert await store.get(store.key("plain", "s")) == b"v"
        new_master = await asyncio.to_thread(redis_sentinel.failover)
        switched = time.monotonic()
        while True:
            try:
                if await store.call("echo", [key], ["after"]) == b"after":
                    break
            except StoreUnavailable:
                pass
            assert time.monotonic() - switched < 3
            await asyncio.sleep(0.05)
        assert store.node is not None and store.node.address == new_master
        with redis_sentinel.data_node(new_master).client() as client:
            assert client.get(key) == b"after"
    finally:
        await store.close()
        await asyncio.to_thread(redis_sentinel.wait_healthy)


async def _published_until_heard(publisher: RedisStore, channel: str, inbox: list[bytes], message: bytes,
                                 within: float) -> float:
    """Publish ``message`` every 50 ms until ``inbox`` holds it; how long that took (at most ``within``).
    A publish that fails (its node is the one being replaced) is tried again on the next turn."""
    started = time.monotonic()
    while message not in inbox:
        assert time.monotonic() - started < within, f"{message!r} not heard within {within} s: {inbox}"
        try:
            await publisher.publish(channel, message)
        except StoreUnavailable:
            pass
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_events_reach_every_replica_after_the_master_carrying_them_dies(
        redis_cluster: RedisClusterProcesses, scripts: Path) -> None:
    # The subscriber listens on the first master of its slot map; the channel's slot is put on that
    # master too, so that the kill takes both the subscription and the publisher's node for the channel.
    first_master = min(redis_cluster.masters_now())
    prefix = next(p for p in (f"t{uuid.uuid4().hex[:8]}" for _ in range(10_000))
                  if redis_cluster.master_of_slot(key_slot(f"{p}:events:t")).address == first_master)
    stores = [RedisStore(cluster_nodes=[seed], prefix=prefix, scripts_dir=scripts, retry_after_failure=0.2)
              for seed in redis_cluster.seeds[:2]]
    channel = stores[0].channel("t")
    assert key_slot(channel) == key_slot(f"{prefix}:events:t")
    inbox: list[bytes] = []
    stores[1].subscribe(channel, inbox.append)
    stores[0].subscribe(channel, lambda message: None)
    for store in stores:
        await store.start()
    victim = redis_cluster.node_at(first_master)
    try:
        await _published_until_heard(stores[0], channel, inbox, b"before", within=5)
        assert stores[1].event_node == first_master
        victim.kill()
        wait_for(lambda: victim.address not in redis_cluster.masters_now(), timeout=30,
                 what="the replica's promotion")
        took = await _published_until_heard(stores[0], channel, inbox, b"after", within=5)
        print(f"events heard again {took:.2f} s after the promotion")
        assert stores[1].event_node not in (None, first_master)
    finally:
        for store in stores:
            await store.close()
        await asyncio.to_thread(redis_cluster.restart, victim)


async def test_events_reach_every_replica_after_a_sentinel_failover(redis_sentinel: SentinelProcesses,
                                                                     scripts: Path) -> None:
    section = SentinelSection(nodes=redis_sentinel.sentinel_addresses, master=redis_sentinel.master_name)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    stores = [RedisStore(sentinel=section, prefix=prefix, scripts_dir=scripts) for _ in range(2)]
    channel = stores[0].channel("t")
    inbox: list[bytes] = []
    stores[1].subscribe(channel, inbox.append)
    stores[0].subscribe(channel, lambda message: None)
    for store in stores:
        await store.start()
    try:
        await _published_until_heard(stores[0], channel, inbox, b"before", within=5)
        old = redis_sentinel.master_address()
        new = await asyncio.to_thread(redis_sentinel.failover)
        switched = time.monotonic()
        # The old master stays a master for seconds after the switch (until the sentinels' next
        # look at it turns it into a replica): what the store writes and hears must be the new one's.
        with redis_sentinel.data_node(old).client() as client:
            assert client.info("replication")["role"] == "master"
        with redis_sentinel.data_node(new).client() as client:
            while True:
                client.publish(channel, b"on the new master")
                await asyncio.sleep(0.05)
                if b"on the new master" in inbox:
                    break
                assert time.monotonic() - switched < 3, inbox
            print(f"events of the new master heard {time.monotonic() - switched:.2f} s after the switch")
            key = stores[1].key("plain", "s")
            while True:
                try:
                    await stores[1].set(key, b"written after the switch")
                except StoreUnavailable:
                    pass
                if client.get(key) == b"written after the switch":
                    break
                assert time.monotonic() - switched < 3
                await asyncio.sleep(0.05)
        took = await _published_until_heard(stores[0], channel, inbox, b"after", within=3)
        print(f"events heard again {took:.2f} s after the switch")
        # Heard from the new master: the old one, now its replica, must not be what carried it.
        redis_sentinel.data_node(old).kill()
        try:
            await _published_until_heard(stores[0], channel, inbox, b"without the old master", within=5)
        finally:
            await asyncio.to_thread(redis_sentinel.data_node(old).start)
    finally:
        for store in stores:
            await store.close()
        await asyncio.to_thread(redis_sentinel.wait_healthy)
