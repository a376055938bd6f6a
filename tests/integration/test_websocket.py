"""WebSockets through the gateway: a real websockets client, the gateway under uvicorn, and a real
websockets backend. The handshake is admitted as any request (rate limit, authentication, circuit);
frames, closes and their codes cross both ways; idleness and oversized messages close the
connection; a hostile handshake is refused at the gateway and never reaches the backend."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from app.config import parse_config
from tests.support import GatewayProcess, GatewayThread, ThreadServer, free_port

API_KEY = "k-0123456789abcdef-ws"
BIG = 4096  # the gateway's max_message_size in these tests


class WsBackend(ThreadServer):
    """A websockets server that echoes each message as it came (text stays text), closes with 4001
    when asked to, sends a message larger than the gateway allows when asked to, refuses the
    handshake on /ws/forbidden with 403, and records every handshake and how each connection closed."""

    def __init__(self) -> None:
        super().__init__()
        self.handshakes: list[Request] = []
        self.closes: list[tuple[int | None, str | None]] = []
        self.server: Server | None = None

    def start(self) -> WsBackend:
        self.thread.start()
        self.server = self.run(self._serve())
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self) -> Server:
        return await serve(self._connection, "127.0.0.1", 0, process_request=self._process_request,
                           select_subprotocol=self._subprotocol, max_size=BIG * 4)

    @staticmethod
    def _subprotocol(connection: ServerConnection, offered: Any) -> Any:
        # chat.v2 or chat.v1 when offered, else none (websockets' own rule refuses a client offering none).
        return next((p for p in ("chat.v2", "chat.v1") if p in offered), None)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes.append(request)
        if request.path.startswith("/ws/forbidden"):
            return connection.respond(403, "not you\n")
        return None

    async def _connection(self, ws: ServerConnection) -> None:
        try:
            async for message in ws:
                if message == "close-4001":
                    await ws.close(4001, "backend says bye")
                elif message == "send-big":
                    await ws.send("x" * (BIG * 2))
                else:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.closes.append((ws.close_code, ws.close_reason))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.server is not None:
            server = self.server
            self.server = None

            async def close() -> None:
                server.close()
                await server.wait_closed()
            self.run(close())
        super().stop()


@pytest.fixture
def ws_backend() -> Iterator[WsBackend]:
    backend = WsBackend().start()
    yield backend
    backend.stop()


def _settings(backend_url: str, redis_url: str | None = None) -> dict[str, Any]:
    routes = [
        {"path": "/ws/*", "target": backend_url, "websocket": {"enabled": True}},
        {"path": "/idle/*", "target": backend_url, "strip_prefix": True,
         "websocket": {"enabled": True, "idle_timeout": 0.5}},
        {"path": "/plain/*", "target": backend_url},
        {"path": "/limited/*", "target": backend_url, "strip_prefix": True,
         "websocket": {"enabled": True}, "rate_limit": {"requests_per_minute": 5}},
        {"path": "/keyed/*", "target": backend_url, "strip_prefix": True,
         "websocket": {"enabled": True}, "auth": {"methods": ["api_key"]}},
        {"path": "/fragile/*", "target": f"http://127.0.0.1:{free_port()}", "websocket": {"enabled": True},
         "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": 60}},
    ]
    config: dict[str, Any] = {
        "router": {"routes": routes},
        "server": {"websocket": {"max_message_size": BIG}, "access_log": False},
        "rate_limiter": {"default": {"requests_per_minute": 1000},
                         "api_keys": [{"key": API_KEY, "client_id": "ws-client"}]},
    }
    if redis_url is not None:
        config["redis"] = {"url": redis_url, "prefix": f"t{uuid.uuid4().hex[:8]}"}
    return config


def _config(backend_url: str, redis_url: str | None = None) -> Any:
    return parse_config(_settings(backend_url, redis_url), {})


@pytest.fixture
def gateway(ws_backend: WsBackend) -> Iterator[GatewayThread]:
    with GatewayThread(_config(ws_backend.url)) as server:
        yield server


def _ws(gateway: GatewayThread | GatewayProcess, path: str) -> str:
    return f"ws://127.0.0.1:{gateway.port}{path}"


def talk(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


def _wait_for_closes(backend: WsBackend, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(backend.closes) < count and time.monotonic() < deadline:
        time.sleep(0.02)


# -- frames and closes ------------------------------------------------------------------------------

def test_frames_pass_both_ways_as_they_were_sent(gateway: GatewayThread, ws_backend: WsBackend) -> None:
    async def exchange() -> tuple[list[Any], str | None, Headers]:
        async with connect(_ws(gateway, "/ws/echo?room=1"), subprotocols=["chat.v1"],
                           additional_headers={"X-Custom": "kept", "Authorization": "Bearer t"}) as ws:
            received = []
            for message in ["hello", b"\x00\x01binary\xff", "é ünïcode", b""]:
                await ws.send(message)
                received.append(await ws.recv())
            return received, ws.subprotocol, ws.response.headers

    received, subprotocol, accepted = talk(exchange())
    assert received == ["hello", b"\x00\x01binary\xff", "é ünïcode", b""]
    assert subprotocol == "chat.v1"  # the backend's choice among the client's offers
    assert len(accepted["x-request-id"]) == 24
    assert accepted["ratelimit-limit"] == "1000"  # the stages' headers, as on any answer
    [handshake] = ws_backend.handshakes
    assert handshake.path == "/ws/echo?room=1"
    headers = handshake.headers
    assert headers["x-custom"] == "kept" and headers["authorization"] == "Bearer t"
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-forwarded-proto"] == "http"
    assert headers["x-request-id"] == accepted["x-request-id"]
    assert headers["sec-websocket-protocol"] == "chat.v1"
    # The gateway's own handshake with the backend: one key, one version, no client extensions.
    assert len(headers.get_all("sec-websocket-key")) == 1
    assert headers.get_all("sec-websocket-version") == ["13"]
    assert "sec-websocket-extensions" not in headers


def test_the_backends_close_code_reaches_the_client(gateway: GatewayThread, ws_backend: WsBackend) -> None:
    async def closed_by_backend() -> tuple[int | None, str | None]:
        async with connect(_ws(gateway, "/ws/echo")) as ws:
            await ws.send("close-4001")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason

    assert talk(closed_by_backend()) == (4001, "backend says bye")


def test_the_clients_close_code_reaches_the_backend(gateway: GatewayThread, ws_backend: WsBackend) -> None:
    async def closed_by_client() -> None:
        async with connect(_ws(gateway, "/ws/echo")) as ws:
            await ws.send("one")
            assert await ws.recv() == "one"
            await ws.close(4002, "client says bye")

    talk(closed_by_client())
    _wait_for_closes(ws_backend, 1)
    assert ws_backend.closes == [(4002, "client says bye")]


def test_an_idle_connection_is_closed_on_both_sides(gateway: GatewayThread, ws_backend: WsBackend) -> None:
    async def idle() -> tuple[int | None, str | None, float]:
        async with connect(_ws(gateway, "/idle/ws/echo")) as ws:
            for _ in range(3):  # messages keep it open past the idle timeout...
                await asyncio.sleep(0.3)
                await ws.send("still here")
                assert await ws.recv() == "still here"
            started = time.monotonic()
            for _ in range(20):  # ...pings do not: each side answers its own
                try:
                    await (await ws.ping())
                except ConnectionClosed:
                    break
                await asyncio.sleep(0.1)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason, time.monotonic() - started

    code, reason, waited = talk(idle())
    assert (code, reason) == (1001, "idle timeout")
    assert waited < 5  # closed by the idle timeout, not by a ping timeout or the test's bound
    _wait_for_closes(ws_backend, 1)
    assert ws_backend.closes == [(1001, "idle timeout")]
    assert ws_backend.handshakes[0].path == "/ws/echo"  # strip_prefix applies as to any request


def test_a_message_over_the_limit_closes_with_1009(gateway: GatewayThread, ws_backend: WsBackend) -> None:
    async def too_big() -> tuple[int | None, str]:
        async with connect(_ws(gateway, "/ws/echo"), max_size=None) as ws:
            await ws.send("y" * BIG)  # at the limit: relayed
            assert await ws.recv() == "y" * BIG
            await ws.send("z" * (BIG + 1))
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ""

    code, _ = talk(too_big())
    assert code == 1009
    _wait_for_closes(ws_backend, 1)
    [(backend_code, _)] = ws_backend.closes
    assert backend_code == 1009
    assert ws_backend.closes  # the oversized message never reached it: the echo would have come back


def test_a_backend_message_over_the_limit_closes_with_1009(gateway: GatewayThread, ws_backend: WsBackend) -> None:
    async def too_big() -> int | None:
        async with connect(_ws(gateway, "/ws/echo"), max_size=None) as ws:
            await ws.send("send-big")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert talk(too_big()) == 1009
    _wait_for_closes(ws_backend, 1)
    assert ws_backend.closes[0][0] == 1009


@pytest.mark.e2e
def test_a_gateway_process_proxies_websockets(ws_backend: WsBackend) -> None:
    # As `python -m app serve` runs it: uvloop, the CLI's listener settings.
    with GatewayProcess(_settings(ws_backend.url)) as gateway:
        async def session() -> tuple[Any, Any, int | None]:
            async with connect(_ws(gateway, "/ws/echo")) as ws:
                await ws.send("over uvloop")
                first = await ws.recv()
                await ws.send(b"\x01\x02")
                second = await ws.recv()
                await ws.send("close-4001")
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                return first, second, ws.close_code

        assert talk(session()) == ("over uvloop", b"\x01\x02", 4001)


def test_stopping_the_gateway_closes_its_websockets_with_1012(ws_backend: WsBackend) -> None:
    gateway = GatewayThread(_config(ws_backend.url)).start()

    async def held_open() -> tuple[int | None, float]:
        async with connect(_ws(gateway, "/ws/echo")) as ws:
            await ws.send("a")
            assert await ws.recv() == "a"
            stopping = asyncio.get_running_loop().run_in_executor(None, gateway.stop)
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            await stopping  # the open connection does not hold the shutdown up
            return ws.close_code, time.monotonic() - started

    code, waited = talk(held_open())
    assert code == 1012  # service restart: the client may come back
    assert waited < 10  # closed by the shutdown, not by a timeout
    _wait_for_closes(ws_backend, 1)
    assert [code for code, _ in ws_backend.closes] == [1012]


# -- handshakes the gateway or the backend refuses ----------------------------------------------------

def _refused(gateway: GatewayThread, path: str, **kwargs: Any) -> Response:
    async def attempt() -> Response:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(_ws(gateway, path), **kwargs):
                pass
        return refused.value.response

    return talk(attempt())


def test_a_route_without_websocket_refuses_the_handshake(gateway: GatewayThread, ws_backend: WsBackend) -> None:
    answer = _refused(gateway, "/plain/x")
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/json"
    assert b"websocket not enabled on this route" in answer.body
    assert _refused(gateway, "/nowhere").status_code == 404
    assert _refused(gateway, "/_gateway/health").status_code == 404  # no WebSocket in the control plane
    assert ws_backend.handshakes == []


def test_the_backends_refusal_is_the_clients_status(gateway: GatewayThread, ws_backend: WsBackend) -> None:
    answer = _refused(gateway, "/ws/forbidden")
    assert answer.status_code == 403
    assert b"backend refused the websocket handshake" in answer.body
    assert [h.path for h in ws_backend.handshakes] == ["/ws/forbidden"]


def test_authentication_applies_to_the_handshake(gateway: GatewayThread, ws_backend: WsBackend) -> None:
    assert _refused(gateway, "/keyed/ws/echo").status_code == 401
    assert _refused(gateway, "/keyed/ws/echo", additional_headers={"X-API-Key": "wrong"}).status_code == 401
    assert ws_backend.handshakes == []

    async def admitted() -> str:
        async with connect(_ws(gateway, "/keyed/ws/echo"), additional_headers={"X-API-Key": API_KEY}) as ws:
            await ws.send("in")
            return await ws.recv()

    assert talk(admitted()) == "in"


def test_the_circuit_applies_to_the_handshake(gateway: GatewayThread) -> None:
    # Nothing listens behind /fragile: two failed handshakes open its circuit.
    assert [_refused(gateway, "/fragile/x").status_code for _ in range(2)] == [502, 502]
    answer = _refused(gateway, "/fragile/x")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/json"


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_the_rate_limit_counts_handshakes(request: pytest.FixtureRequest, ws_backend: WsBackend, store: str) -> None:
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    with GatewayThread(_config(ws_backend.url, redis_url)) as gateway:
        async def open_five() -> list[str]:
            echoes = []
            for n in range(5):
                async with connect(_ws(gateway, "/limited/ws/echo")) as ws:
                    await ws.send(str(n))
                    echoes.append(await ws.recv())
            return echoes

        assert talk(open_five()) == ["0", "1", "2", "3", "4"]
        answer = _refused(gateway, "/limited/ws/echo")
    assert answer.status_code == 429
    assert answer.headers["content-type"] == "application/json"
    assert "retry-after" in answer.headers and answer.headers["ratelimit-limit"] == "5"
    assert b"rate limit exceeded" in answer.body
    assert len(ws_backend.handshakes) == 5


# -- hostile handshakes, on a raw socket ---------------------------------------------------------------

def _key() -> bytes:
    return base64.b64encode(os.urandom(16))


def _handshake(path: bytes = b"/ws/echo", method: bytes = b"GET", key: bytes | None = None,
               version: bytes = b"13", extra: bytes = b"") -> bytes:
    return (method + b" " + path + b" HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + (key if key is not None else _key()) + b"\r\n"
            b"Sec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n")


def _raw(gateway: GatewayThread, data: bytes, read_until_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return answer
            answer += chunk
            if not read_until_close and b"\r\n\r\n" in answer:
                return answer


@pytest.mark.parametrize(("data", "status"), [
    (_handshake(key=b"not-a-key"), b"400"),
    (_handshake(key=base64.b64encode(b"short")), b"400"),
    (_handshake(version=b"8"), b"400"),
    (_handshake(method=b"POST"), b"405"),
    # A body on a handshake: llhttp would read it as frames; refused as on any upgrade.
    (_handshake(extra=b"Content-Length: 5\r\n") + b"hello", b"400"),
    # The head's limits and checks apply as to any request.
    (_handshake(extra=b"X-Big: " + b"a" * 9000 + b"\r\n"), b"431"),
    (_handshake(path=b"/ws/../../etc"), b"400"),
])
def test_a_hostile_handshake_is_refused_at_the_gateway(gateway: GatewayThread, ws_backend: WsBackend,
                                                        data: bytes, status: bytes) -> None:
    answer = _raw(gateway, data)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert ws_backend.handshakes == []


def test_the_backend_sees_the_normalised_path(gateway: GatewayThread, ws_backend: WsBackend) -> None:
    answer = _raw(gateway, _handshake(path=b"/ws/a/..//b/%7Ec?q=%2F"), read_until_close=False)
    assert answer.startswith(b"HTTP/1.1 101 ")
    [handshake] = ws_backend.handshakes
    assert handshake.path == "/ws/b/~c?q=%2F"


def test_a_frame_sent_with_the_handshake_is_not_lost(gateway: GatewayThread) -> None:
    # A client may send its first frame right behind the handshake, in the same packet.
    mask = os.urandom(4)
    payload = b"early"
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(_handshake() + frame)
        answer = b""
        while b"early" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    head, _, frames = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert frames == bytes([0x81, len(payload)]) + payload  # the echo, unmasked from the server
