"""A Redis older than the scripts need (7.0: the cache's lookup lists a fill with ``PEXPIRE ... NX``).
Only Redis 7 is installed here, so an old one is played by a real redis-server behind a relay that
rewrites the version its INFO reports: every other byte passes unchanged. On "6.x" the store is not
ready and says why, once, in the log; readiness is what takes the replica out of the load balancer.
Through the relay without the rewrite, the same store is ready: the refusal is the version's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from app.store.node import redis_version
from app.store.redis import RedisStore
from tests.support import RedisProcess, free_port

pytestmark = pytest.mark.redis


class VersionRelay:
    """A TCP relay to a Redis that, with ``pretend``, turns "redis_version:7." into "redis_version:6."
    in what the server sends (same length: the RESP bulk string's length still holds)."""

    def __init__(self, target_port: int, pretend: bool) -> None:
        self.target_port = target_port
        self.pretend = pretend
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> VersionRelay:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rewrite: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if rewrite:
                        data = data.replace(b"redis_version:7.", b"redis_version:6.")
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, server_writer, False),
                             pipe(server_reader, client_writer, self.pretend))


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


def test_the_version_is_read_from_info() -> None:
    assert redis_version(b"# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n") == (7, 0, 15)
    assert redis_version(b"redis_version:6.2.14\r\n") == (6, 2, 14)
    assert redis_version(b"redis_mode:standalone\r\n") is None
    assert redis_version(b"redis_version:unstable-x\r\n") is None


async def test_a_redis_older_than_7_is_never_ready_and_the_log_says_why(
        redis_server: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
    async with VersionRelay(redis_server.port, pretend=True) as relay:
        store = RedisStore(f"redis://127.0.0.1:{relay.port}/0")
        with caplog.at_level(logging.ERROR, logger="apigw.store"):
            await store.start()
            try:
                assert not await store.ready()
                assert not await store.ready()
            finally:
                await store.close()
    refusals = [r.getMessage() for r in caplog.records if "needs Redis 7.0 or newer" in r.getMessage()]
    assert len(refusals) == 1, refusals  # said once, not on every readiness check
    assert f"redis at 127.0.0.1:{relay.port} is version 6.0." in refusals[0]


async def test_through_the_same_relay_a_redis_7_is_ready(redis_server: RedisProcess) -> None:
    async with VersionRelay(redis_server.port, pretend=False) as relay:
        store = RedisStore(f"redis://127.0.0.1:{relay.port}/0")
        await store.start()
        try:
            assert await store.ready()
        finally:
            await store.close()
