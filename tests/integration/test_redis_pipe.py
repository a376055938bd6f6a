"""The request path's multiplexed Redis connection (app/store/pipe.py), against real Redis servers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from app.store import ScriptCall, StoreUnavailable
from app.store.pipe import PipeBroken, PipeUnavailable, RedisPipe, ReplyError
from app.store.redis import RedisStore
from tests.support import RedisProcess

pytestmark = pytest.mark.redis


async def test_concurrent_callers_get_their_own_replies(redis_url: str, key_prefix: str) -> None:
    pipe = RedisPipe(redis_url)
    try:
        async def caller(i: int) -> list[object]:
            key = f"{key_prefix}:pipe:{i}"
            return await pipe.execute([("SET", key, i), ("INCRBY", key, i), ("GET", key), ("DEL", key)])

        answers = await asyncio.gather(*(caller(i) for i in range(200)))
        assert answers == [[b"OK", 2 * i, str(2 * i).encode(), 1] for i in range(200)]
    finally:
        await pipe.close()


async def test_error_replies_are_values_and_the_connection_goes_on(redis_url: str, key_prefix: str) -> None:
    pipe = RedisPipe(redis_url)
    try:
        key = f"{key_prefix}:pipe:text"
        replies = await pipe.execute([("SET", key, "x"), ("INCR", key), ("GET", key), ("DEL", key)])
        assert replies[0] == b"OK" and isinstance(replies[1], ReplyError) and replies[2:] == [b"x", 1]
        assert await pipe.execute([("PING",)]) == [b"PONG"]
    finally:
        await pipe.close()


async def test_a_cancelled_caller_does_not_shift_the_replies(redis_url: str, key_prefix: str) -> None:
    pipe = RedisPipe(redis_url, reply_timeout=5)
    try:
        slow = asyncio.ensure_future(pipe.execute([("BLPOP", f"{key_prefix}:pipe:never", "0.3")]))
        await asyncio.sleep(0.05)
        slow.cancel()
        assert await pipe.execute([("ECHO", "mine")]) == [b"mine"]  # queued behind the BLPOP
    finally:
        await pipe.close()


async def test_password_and_database_from_the_url(key_prefix: str) -> None:
    with RedisProcess(args=("--requirepass", "s3cret")) as server:
        pipe = RedisPipe(f"redis://:s3cret@127.0.0.1:{server.port}/3")
        try:
            await pipe.execute([("SET", "where", "db3")])
            other = aioredis.Redis.from_url(f"redis://:s3cret@127.0.0.1:{server.port}/3")
            assert await other.get("where") == b"db3"
            await other.aclose()
        finally:
            await pipe.close()
        wrong = RedisPipe(f"redis://:wrong@127.0.0.1:{server.port}/0")
        with pytest.raises(PipeUnavailable, match="refused"):
            await wrong.execute([("PING",)])


async def test_down_then_back(key_prefix: str) -> None:
    with RedisProcess() as server:
        pipe = RedisPipe(server.url)
        try:
            assert await pipe.execute([("PING",)]) == [b"PONG"]
            server.stop()
            with pytest.raises(PipeUnavailable):  # nothing was sent: safe to say it did not run
                for _ in range(3):  # the first may still find the old socket before its close is seen
                    try:
                        await pipe.execute([("PING",)])
                    except PipeBroken:
                        continue
            server.start()
            assert await pipe.execute([("PING",)]) == [b"PONG"]
        finally:
            await pipe.close()


async def test_a_stalled_redis_fails_the_waiters_within_the_timeout(key_prefix: str) -> None:
    with RedisProcess() as server:
        assert server.proc is not None
        pipe = RedisPipe(server.url, reply_timeout=0.4)
        try:
            await pipe.execute([("PING",)])
            os.kill(server.proc.pid, signal.SIGSTOP)
            started = time.monotonic()
            try:
                with pytest.raises(PipeBroken) as broken:
                    await pipe.execute([("PING",)])
                assert broken.value.timed_out
                assert time.monotonic() - started < 0.4 + 0.5  # the watchdog looks every timeout/4
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            assert await pipe.execute([("PING",)]) == [b"PONG"]
        finally:
            await pipe.close()


async def test_a_call_whose_connection_broke_in_flight_is_not_sent_again(tmp_path: Path, redis_url: str,
                                                                        key_prefix: str) -> None:
    """It may have run (a rate limit charged): the store says unavailable and does not resend it."""
    (tmp_path / "incr.lua").write_text("return redis.call('INCR', KEYS[1])")
    store = RedisStore(redis_url, key_prefix, scripts_dir=tmp_path, socket_timeout=5)
    await store.start()
    admin = aioredis.Redis.from_url(redis_url)
    key = store.key("pipe", "t", "count")
    try:
        # The script waits in Redis behind a blocking command on the same connection; killing the
        # connection then drops it unrun, so a resend would be the only way the key could exist.
        blocked = asyncio.ensure_future(store.pipe.execute([("BLPOP", store.key("pipe", "t", "never"), "2")]))
        charged = asyncio.ensure_future(store.run(ScriptCall("incr", [key])))
        await asyncio.sleep(0.2)
        me = await admin.client_id()
        for client in await admin.client_list():
            if int(client["id"]) != me and client["cmd"] == "blpop":
                await admin.client_kill_filter(_id=client["id"])
        with pytest.raises(StoreUnavailable):
            await charged
        with pytest.raises(PipeBroken):
            await blocked
        assert await admin.get(key) is None
        assert await store.run(ScriptCall("incr", [key])) == [1]  # and the next call reconnects
    finally:
        await admin.delete(key)
        await admin.aclose()
        await store.close()


async def test_a_stalled_redis_pauses_the_store_until_its_retry(tmp_path: Path, key_prefix: str) -> None:
    """A call on the open connection that gets no reply: StoreUnavailable within the timeout, and the
    next call is refused at once (the server is paused), not queued behind it."""
    (tmp_path / "one.lua").write_text("return 1")
    with RedisProcess() as server:
        assert server.proc is not None
        store = RedisStore(server.url, key_prefix, scripts_dir=tmp_path, socket_timeout=0.4, retry_after_failure=30)
        await store.start()
        try:
            assert await store.run(ScriptCall("one", [store.key("pipe", "t", "k")])) == [1]
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                with pytest.raises(StoreUnavailable, match="unreachable"):
                    await store.run(ScriptCall("one", [store.key("pipe", "t", "k")]))
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match="pausing"):
                    await store.run(ScriptCall("one", [store.key("pipe", "t", "k")]))
                assert time.monotonic() - started < 0.2
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
        finally:
            await store.close()
