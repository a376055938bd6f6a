"""The proxy core against a real origin that misbehaves on the wire (a raw asyncio socket server):
statuses no HTTP client may relay, a pooled connection closed under a request, idle connections
closed by the origin, and bodies longer than their Content-Length."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from app.config import parse_config
from tests.support import GatewayThread, ThreadServer


@dataclass
class Seen:
    """One request as the origin read it."""

    method: str
    path: str
    connection: int  # the origin's number for the connection it came on (1, 2, ...)
    nth: int  # its place on that connection (1: the connection's first request)


class RawOrigin(ThreadServer):
    """An HTTP/1.1 origin written on raw sockets, so that it can answer what a real server never
    would. The request path picks the misbehaviour (see ``_answer``); every request is recorded.

    ``idle_close`` is the origin's keep-alive time: a request that arrives on a connection idle for
    longer is read and then dropped unanswered, as when the origin's close crosses the request on
    the wire (the race a pooled connection loses)."""

    def __init__(self, idle_close: float = 60.0) -> None:
        super().__init__()
        self.idle_close = idle_close
        self.seen: list[Seen] = []
        # Connections the client closed, by number: the gateway dropping an idle connection first.
        self.closed_by_client: set[int] = set()
        self._connections = 0

    def start(self) -> RawOrigin:
        self.thread.start()
        server = self.run(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RawOrigin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        number, nth, last = self._connections, 0, time.monotonic()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                nth += 1
                self.seen.append(Seen(method, path, number, nth))
                if time.monotonic() - last > self.idle_close or (path.startswith("/drop-reused") and nth > 1):
                    return  # closed without a byte of an answer
                for n, part in enumerate(self._answer(path)):
                    if n:
                        await asyncio.sleep(0.05)  # so that the parts come in separate reads
                    writer.write(part)
                    await writer.drain()
                last = time.monotonic()
        except asyncio.IncompleteReadError as eof:
            if not eof.partial:
                self.closed_by_client.add(number)
        except ConnectionError:
            pass
        finally:
            writer.close()

    @staticmethod
    def _answer(path: str) -> list[bytes]:
        """The answer to ``path``, in the parts that are written one after the other."""
        if path.startswith("/status/"):
            code = path.removeprefix("/status/")
            return [f"HTTP/1.1 {code} Whatever\r\nContent-Length: 2\r\n\r\nno".encode()]
        if path.startswith("/control-character"):
            return [b"HTTP/1.1 200 OK\r\nX-Note: a\x01b\r\nContent-Length: 2\r\n\r\nno"]
        if path.startswith("/longer"):
            # Five bytes declared, more sent: what follows the declared length is no answer.
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
            if path == "/longer/body-apart":
                return [head, b"hello, world\r\n"]
            return [head + b"hello, world\r\n\r\n"]
        body = path.encode()
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)]


@pytest.fixture
def origin() -> Iterator[RawOrigin]:
    with RawOrigin() as server:
        yield server


def _gateway(origin: RawOrigin, **server: object) -> GatewayThread:
    routes = [{"path": "/*", "target": origin.url}]
    return GatewayThread(parse_config({"router": {"routes": routes}, "server": server}, {}))


@pytest.mark.parametrize("path", ["/status/999", "/status/600", "/status/101", "/control-character"])
def test_an_answer_the_gateway_cannot_relay_is_a_json_502(origin: RawOrigin, path: str) -> None:
    with _gateway(origin) as gateway, httpx.Client() as client:
        answer = client.get(f"{gateway.url}{path}")
        assert answer.status_code == 502
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"] == "backend answer cannot be relayed"
        # The client's connection is still good for the next request.
        assert client.get(f"{gateway.url}/fine").text == "/fine"


@pytest.mark.parametrize("method, headers, resent", [
    ("GET", {}, True),
    ("PUT", {}, True),
    ("DELETE", {}, True),
    ("POST", {"Idempotency-Key": "k-1"}, True),
    ("POST", {}, False),
    ("PATCH", {}, False),
])
def test_a_request_dropped_on_a_reused_connection_is_sent_again_once_when_it_may_be(
        origin: RawOrigin, method: str, headers: dict[str, str], resent: bool) -> None:
    with _gateway(origin) as gateway, httpx.Client() as client:
        assert client.get(f"{gateway.url}/drop-reused/warm").status_code == 200  # a pooled connection
        answer = client.request(method, f"{gateway.url}/drop-reused/again", content=b"{}", headers=headers)
    tries = [(seen.connection, seen.nth) for seen in origin.seen if seen.path == "/drop-reused/again"]
    if resent:
        assert answer.status_code == 200
        assert answer.text == "/drop-reused/again"
        assert tries == [(1, 2), (2, 1)]  # dropped on the pooled connection, answered on a new one
    else:
        assert answer.status_code == 502
        assert tries == [(1, 2)]


@pytest.mark.parametrize("method, headers", [("PUT", {}), ("POST", {"Idempotency-Key": "k-1"})])
def test_a_streamed_body_dropped_on_a_reused_connection_is_not_sent_again(
        origin: RawOrigin, method: str, headers: dict[str, str]) -> None:
    """The client's body, streamed (chunked), went out as it came: there is nothing to send again."""
    def chunks() -> Iterator[bytes]:
        yield b"{"
        yield b"}"

    with _gateway(origin) as gateway, httpx.Client() as client:
        assert client.get(f"{gateway.url}/drop-reused/warm").status_code == 200
        answer = client.request(method, f"{gateway.url}/drop-reused/streamed", content=chunks(), headers=headers)
    assert answer.status_code == 502
    assert [(seen.connection, seen.nth) for seen in origin.seen if seen.path == "/drop-reused/streamed"] == [(1, 2)]


def test_pooled_connections_are_dropped_before_the_origin_would_close_them(origin: RawOrigin) -> None:
    origin.idle_close = 0.6
    with _gateway(origin, upstream_keepalive=0.2) as gateway, httpx.Client() as client:
        assert client.post(f"{gateway.url}/first").status_code == 200
        time.sleep(0.8)
        # A POST is never sent twice: it succeeds only because the stale connection was not used.
        answer = client.post(f"{gateway.url}/second")
    assert answer.status_code == 200
    assert [(seen.path, seen.connection) for seen in origin.seen] == [("/first", 1), ("/second", 2)]
    assert 1 in origin.closed_by_client


def test_the_default_idle_time_is_below_common_backend_keepalives() -> None:
    assert parse_config({}, {}).server.upstream_keepalive < 5


@pytest.mark.parametrize("path", ["/longer/in-one-read", "/longer/body-apart"])
def test_a_body_longer_than_its_content_length_is_cut_there(origin: RawOrigin, path: str) -> None:
    with _gateway(origin) as gateway, httpx.Client() as client:
        answer = client.get(f"{gateway.url}{path}")
        assert (answer.status_code, answer.content) == (200, b"hello")
        # The leftover bytes poison nothing: the next requests get their own answers.
        for n in range(3):
            follow = client.post(f"{gateway.url}/next/{n}")
            assert (follow.status_code, follow.text) == (200, f"/next/{n}")
