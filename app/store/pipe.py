"""One multiplexed connection to Redis for the request path.

Every concurrent request's commands share one socket; Redis answers a connection's commands in the
order it read them, so a FIFO of waiters matches each reply to its caller (as Lettuce and
StackExchange.Redis do). Commands written during one turn of the event loop leave in one send.
Replies are parsed by hiredis, as redis-py parses them.

Why not redis-py's client on this path: measured here (tests/perf/bench_redis_clients.py, CPU per
EVALSHA round trip with 32 concurrent callers), redis.asyncio costs several times what this does
(connection pool, retry wrapper and event hooks per call); coredis and valkey-glide were measured in
the same run and sit between the two. redis-py stays for everything off the request path (script
loading, plain commands, pub/sub).

Failure rules, which the store above builds on:
- a command that could not be sent (no connection, connect refused or timed out) raises
  ``PipeUnavailable``: it certainly did not run, so the caller may try again;
- a command sent on a connection that then broke raises ``PipeBroken``: it may have run, so it is
  never sent again by this module (a rate limit charged twice would be the result);
- a reply that takes longer than ``reply_timeout`` aborts the connection (every waiter gets
  ``PipeBroken(timed_out=True)``); one timer per connection watches the oldest waiter, no timer per
  call.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from app.edge.coalescing import CoalescingTransport

ReplyError = hiredis.ReplyError
# hiredis packs a tuple of arguments in C, as ``bulk`` would each (numbers as redis-py sends them;
# a bool or None refused with TypeError). Called as is where the caller has made the tuple.
pack_tuple = hiredis.pack_command
Command = Sequence[bytes | str | int | float]


class PipeUnavailable(ConnectionError):
    """Nothing was sent: Redis could not be reached."""


class PipeBroken(ConnectionError):
    """The connection broke (or stalled) after the command was sent: it may or may not have run."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def arg_bytes(value: bytes | str | int | float) -> bytes:
    """An argument as Redis receives it from redis-py (the twins read theirs through this too)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value).encode()  # what redis-py sends for numbers
    raise TypeError(f"cannot send {type(value).__name__} to redis")


def bulk(value: bytes | str | int | float) -> bytes:
    raw = arg_bytes(value)
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def encode(command: Command) -> bytes:
    """One command in RESP: an array of bulk strings."""
    return pack_tuple(command if command.__class__ is tuple else tuple(command))


class _Waiter:
    """The caller of one batch: how many replies it expects, and those that came."""

    __slots__ = ("future", "expected", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int, sent_at: float) -> None:
        self.future = future
        self.expected = expected
        self.replies: list[Any] = []
        self.sent_at = sent_at


class _Connection(asyncio.Protocol):
    def __init__(self, reply_timeout: float) -> None:
        self.reply_timeout = reply_timeout
        self.reader = hiredis.Reader()
        self.waiters: collections.deque[_Waiter] = collections.deque()
        self.transport: CoalescingTransport | None = None
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._watch: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The calls of one loop step (several requests' batches) leave in one write.
        self.transport = CoalescingTransport(transport, self._loop)  # type: ignore[arg-type]
        self._watch = self._loop.call_later(self.reply_timeout / 4, self._check_stalled)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as error:
                self._fail(PipeBroken(f"redis protocol error: {error}"))
                return
            if reply is False:
                return
            if not waiters:  # cannot happen with a well-behaved server; never match replies wrongly
                self._fail(PipeBroken("redis sent a reply nobody asked for"))
                return
            waiter = waiters[0]
            waiter.replies.append(reply)
            if len(waiter.replies) == waiter.expected:
                waiters.popleft()
                if not waiter.future.done():  # its caller may have been cancelled
                    waiter.future.set_result(waiter.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(PipeBroken(f"redis connection lost: {exc or 'closed by the server'}"))

    # -- sending --------------------------------------------------------------------------------

    def send(self, payload: bytes, expected: int) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        self.waiters.append(_Waiter(future, expected, time.monotonic()))
        assert self.transport is not None  # sent on only once connected
        self.transport.write(payload)
        return future

    # -- failure --------------------------------------------------------------------------------

    def _check_stalled(self) -> None:
        if self.closed:
            return
        if self.waiters and time.monotonic() - self.waiters[0].sent_at > self.reply_timeout:
            self._fail(PipeBroken(f"no reply from redis in {self.reply_timeout} s", timed_out=True))
            return
        self._watch = self._loop.call_later(self.reply_timeout / 4, self._check_stalled)

    def _fail(self, error: PipeBroken) -> None:
        if self.closed:  # connection_lost after an abort of ours: the waiters were told already
            return
        self.closed = True
        if self._watch is not None:
            self._watch.cancel()
        if self.transport is not None:
            self.transport.abort()
        waiters, self.waiters = self.waiters, collections.deque()
        for waiter in waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error)
                # Marked retrieved: a caller that stopped waiting (a timeout above us) must not
                # leave "exception was never retrieved" in the log.
                waiter.future.exception()


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    """rediss:// as redis-py reads it: certificates verified unless ssl_cert_reqs=none, a CA file
    from ssl_ca_certs."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", str(int(ssl.CERT_NONE))):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class RedisPipe:
    """``execute`` sends a batch of commands and returns their replies, in order; error replies
    come back as ``hiredis.ReplyError`` values, for the caller to judge."""

    def __init__(self, url: str, connect_timeout: float = 0.5, reply_timeout: float = 1.0) -> None:
        options = parse_url(url)
        self.url = url
        self.host: str = options.get("host", "localhost")
        self.port: int = options.get("port", 6379)
        self.path: str | None = options["path"] if options.get("connection_class") is UnixDomainSocketConnection else None
        self.ssl = _ssl_context(options) if options.get("connection_class") is SSLConnection else None
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        # Sent first on every new connection, before any caller's command.
        self._hello: list[Command] = []
        if options.get("password") is not None:
            user = options.get("username")
            self._hello.append(("AUTH", user, options["password"]) if user else ("AUTH", options["password"]))
        if options.get("db"):
            self._hello.append(("SELECT", options["db"]))
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    def submit(self, commands: list[bytes]) -> asyncio.Future[list[Any]] | None:
        """``execute`` without a coroutine, for encoded commands on an open connection: the batch
        is written now and the future gets its replies (or ``PipeBroken``); None when there is no
        open connection, for the caller to ``execute`` (which connects)."""
        connection = self._connection
        if connection is None or connection.closed or not commands:
            return None
        return connection.send(b"".join(commands), len(commands))

    async def execute(self, commands: Sequence[Command | bytes]) -> list[Any]:
        """Commands already encoded (bytes) are sent as they are."""
        if not commands:
            return []
        payload = b"".join(c if isinstance(c, bytes) else encode(c) for c in commands)
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        return await connection.send(payload, len(commands))

    async def _connect(self) -> _Connection:
        # Callers arriving while a connection is being made wait for that one.
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_future()
            try:
                connection = await self._open()
            except BaseException as error:
                # The callers waiting on this attempt fail with it (a cancelled one, as unreachable).
                failure = error if isinstance(error, PipeUnavailable) else PipeUnavailable("connect cancelled")
                self._connecting.set_exception(failure)
                self._connecting.exception()
                raise
            finally:
                waiting, self._connecting = self._connecting, None
            self._connection = connection
            waiting.set_result(connection)
            return connection
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path is not None:
                    _, connection = await loop.create_unix_connection(
                        lambda: _Connection(self.reply_timeout), self.path)
                else:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self.reply_timeout), self.host, self.port, ssl=self.ssl)
                if self._hello:
                    for reply in await connection.send(b"".join(map(encode, self._hello)), len(self._hello)):
                        if isinstance(reply, ReplyError):
                            connection._fail(PipeBroken(str(reply)))
                            raise PipeUnavailable(f"redis refused the connection: {reply}")
        except (OSError, TimeoutError, PipeBroken) as error:
            raise PipeUnavailable(f"cannot connect to redis at {self._where()}: {error or 'timed out'}") from None
        return connection

    def _where(self) -> str:
        return self.path or f"{self.host}:{self.port}"

    async def close(self) -> None:
        if self._connection is not None:
            self._connection._fail(PipeBroken("closed"))
            self._connection = None
