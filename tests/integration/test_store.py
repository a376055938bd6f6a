"""The store contract: the same tests on the memory store and on a real Redis."""

import asyncio
import time
from pathlib import Path

import pytest

from app.store import MemoryStore, Store, StoreError, StoreUnavailable
from app.store.redis import RedisStore
from tests.support import RedisProcess


async def test_plain_values(store: Store) -> None:
    key = store.key("test", "t1", "value")
    assert await store.get(key) is None
    await store.set(key, b"v1")
    assert await store.get(key) == b"v1"
    assert await store.delete(key) == 1
    assert await store.get(key) is None


async def test_values_expire(store: Store) -> None:
    key = store.key("test", "t1", "ttl")
    await store.set(key, b"v", ttl=0.2)
    assert await store.get(key) == b"v"
    await asyncio.sleep(0.35)
    assert await store.get(key) is None


async def test_hashes(store: Store) -> None:
    key = store.key("test", "t1", "hash")
    await store.hset(key, {"a": b"1", "b": 2})
    assert await store.hgetall(key) == {b"a": b"1", b"b": b"2"}
    assert await store.hdel(key, "a", "zz") == 1
    assert await store.hgetall(key) == {b"b": b"2"}


async def test_keys_carry_prefix_and_hash_tag(store: Store) -> None:
    assert store.key("rl", "client-1", "m") == f"{store.prefix}:rl:{{client-1}}:m"


async def test_events_reach_subscribers(store: Store) -> None:
    channel = store.channel("test")
    got: list[bytes] = []
    store.subscribe(channel, got.append)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:  # the subscription may take a moment to attach
        await store.publish(channel, b"hello")
        await asyncio.sleep(0.05)
    assert got and got[0] == b"hello"


async def test_unknown_script_is_an_error(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.call("no_such_script", [store.key("x", "y")])


@pytest.mark.redis
async def test_scripts_reload_after_script_flush(tmp_path: Path, redis_url: str, key_prefix: str) -> None:
    (tmp_path / "echo.lua").write_text("return ARGV[1]")
    store = RedisStore(redis_url, key_prefix, scripts_dir=tmp_path)
    await store.start()
    try:
        assert await store.call("echo", [], ["a"]) == b"a"
        await store.redis.script_flush()  # what a restarted Redis looks like to us
        assert await store.call("echo", [], ["b"]) == b"b"
    finally:
        await store.close()


@pytest.mark.redis
async def test_unreachable_redis_fails_fast_and_recovers(tmp_path: Path, key_prefix: str) -> None:
    (tmp_path / "echo.lua").write_text("return ARGV[1]")
    with RedisProcess() as server:
        store = RedisStore(server.url, key_prefix, scripts_dir=tmp_path, retry_after_failure=0.3)
        await store.start()
        try:
            assert await store.call("echo", [], ["up"]) == b"up"
            server.stop()
            with pytest.raises(StoreUnavailable):
                await store.call("echo", [], ["down"])
            started = time.monotonic()
            for _ in range(100):  # while paused, calls fail without touching the network
                with pytest.raises(StoreUnavailable):
                    await store.call("echo", [], ["down"])
            assert time.monotonic() - started < 0.25
            assert not await store.ping()
            server.start()  # same port, empty Redis: scripts must be reloaded
            await asyncio.sleep(0.35)
            assert await store.call("echo", [], ["back"]) == b"back"
            assert await store.ping()
        finally:
            await store.close()


@pytest.mark.redis
async def test_event_stream_reconnects_and_says_so(tmp_path: Path, key_prefix: str) -> None:
    with RedisProcess() as server:
        store = RedisStore(server.url, key_prefix, scripts_dir=tmp_path)
        await store.start()
        reconnected = asyncio.Event()

        async def on_reconnect() -> None:
            reconnected.set()

        got: list[bytes] = []
        store.subscribe(store.channel("t"), got.append)
        store.on_reconnect(on_reconnect)
        try:
            await asyncio.sleep(0.3)
            server.stop()
            await asyncio.sleep(0.3)
            server.start()
            await asyncio.wait_for(reconnected.wait(), timeout=5)
            for _ in range(50):
                await store.publish(store.channel("t"), b"after")
                if got:
                    break
                await asyncio.sleep(0.05)
            assert got == [b"after"] or got[0] == b"after"
        finally:
            await store.close()


def test_memory_store_is_not_shared() -> None:
    assert MemoryStore().shared is False


async def test_capped_streams(store: Store) -> None:
    key = store.key("test", "t1", "stream")
    assert await store.xrevrange(key, 10) == []
    ids = [await store.xadd(key, {"n": str(n), "raw": b"\x00\xff"}, maxlen=3) for n in range(5)]
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split(b"-")))
    assert len(set(ids)) == 5
    newest = await store.xrevrange(key, 10)
    assert newest == [(ids[n], {b"n": str(n).encode(), b"raw": b"\x00\xff"}) for n in (4, 3, 2)]
    assert await store.xrevrange(key, 1) == newest[:1]
    assert await store.delete(key) == 1
