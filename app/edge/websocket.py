"""WebSockets on routes that enable them: the handshake is admitted as any request, then frames are
relayed both ways until one side closes or the connection has been idle too long.

The handshake goes through the pipeline's admission (``admit_upgrade``: rate limit, authentication,
circuit); a refusal is an ordinary HTTP answer, the gateway's JSON error (ASGI's WebSocket denial
response). Then the backend is asked (aiohttp's ``ws_connect``, over the data plane's session) with
the client's headers minus the handshake's own, and the client is accepted only once the backend
has accepted, with the subprotocol the backend chose; a backend that refuses gives the client its
status, and a backend that cannot be reached 502 or 504. How the backend took the handshake is the
circuit's outcome, as an answer's status is for any request.

Each side answers its own pings. A close from either side reaches the other with its code and
reason (codes that cannot be sent on the wire, 1005 and 1006, become 1000 and 1001); no message
either way for the route's ``websocket.idle_timeout`` closes both with 1001.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any

import aiohttp

from app.edge.proxy import exchange_from_scope
from app.edge.upstream import backend_url
from app.pipeline.exchange import BackendCall, Exchange, Reply, error_reply
from app.pipeline.orchestrator import ApiGatewayOrchestrator

log = logging.getLogger("apigw.websocket")

Scope = dict[str, Any]
Observe = Callable[[Exchange, int, float], None]

# The handshake's own fields: the gateway makes its own handshake with the backend.
HANDSHAKE_FIELDS = frozenset({b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
                              b"sec-websocket-protocol", b"sec-websocket-accept"})
# Close codes that mean "no code" or "no close frame" (RFC 6455 section 7.4.1): never sent.
NO_STATUS, ABNORMAL = 1005, 1006
GOING_AWAY, INTERNAL_ERROR = 1001, 1011


def sendable(code: int | None) -> int:
    """The close code to pass on for one received (or reported) from the other side."""
    if code is None or code == NO_STATUS:
        return 1000
    if code == ABNORMAL or not (1000 <= code <= 1014 or 3000 <= code <= 4999) or code in (1004, 1015):
        return GOING_AWAY
    return code


class WebSocketProxy:
    """The ASGI app for ``websocket`` scopes outside /_gateway/."""

    def __init__(self, orchestrator: ApiGatewayOrchestrator, max_message_size: int,
                 observe: Observe | None = None) -> None:
        self.orchestrator = orchestrator
        self.max_message_size = max_message_size
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        started = perf_counter()
        message = await receive()
        if message["type"] != "websocket.connect":  # gone before the handshake was read
            return
        ex = exchange_from_scope(scope, None)
        ex.scheme = "https" if scope.get("scheme") == "wss" else "http"
        backend_ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            refused = await self.orchestrator.admit_upgrade(ex)
            if refused is None:
                refused, backend_ws = await self._connect(ex, scope)
        except Exception:  # the last net, as the proxy's: JSON, logged, never a stack trace
            log.exception("websocket handshake failed for %s (request %s)", ex.path, ex.request_id)
            refused = error_reply(500, "internal gateway error", request_id=ex.request_id)
        if refused is not None:
            await deny(send, refused, ex)
            self._observed(ex, refused.status, perf_counter() - started)
            return
        assert backend_ws is not None and ex.route is not None
        try:
            headers = ex.response_headers  # what the stages add to any answer (RateLimit-*)
            headers.append((b"x-request-id", ex.request_id.encode("latin-1")))
            await send({"type": "websocket.accept", "subprotocol": backend_ws.protocol, "headers": headers})
            self._observed(ex, 101, perf_counter() - started)
            await Relay(receive, send, backend_ws, ex.route.spec.websocket.idle_timeout).run()
        finally:
            await backend_ws.close()

    async def _connect(self, ex: Exchange, scope: Scope) -> tuple[Reply | None, aiohttp.ClientWebSocketResponse | None]:
        """The backend's handshake: its connection, or the reply the client gets instead."""
        route = ex.route
        assert route is not None
        target = ex.target or route.balancer.next_target()
        if target is None:
            return error_reply(503, "no healthy target", route=route.key), None
        orchestrator = self.orchestrator
        url = backend_url(target.url, orchestrator.upgrade_path(ex), ex.query_string.decode("latin-1"))
        headers = orchestrator.upgrade_headers(ex, HANDSHAKE_FIELDS)
        timeout = route.spec.timeout
        sent = perf_counter()
        reply: Reply | None = None
        backend_ws = None
        try:
            # The read timeout bounds the handshake's answer, as it bounds any answer's head.
            async with asyncio.timeout(timeout.connect + timeout.read):
                backend_ws = await orchestrator.upstream.session.ws_connect(
                    url, protocols=scope.get("subprotocols") or (), headers=headers, autoclose=True,
                    autoping=True, compress=0,
                    # aiohttp refuses a frame of max_msg_size bytes itself: one more lets the limit in.
                    max_msg_size=self.max_message_size + 1)
            status: int | None = 101
        except aiohttp.WSServerHandshakeError as error:
            # A status the backend answered instead of 101 is the client's; a broken 101 is the gateway's.
            status = error.status
            if status != 101 and 200 <= status <= 599:
                reply = error_reply(status, "backend refused the websocket handshake", route=route.key)
            else:
                status = None
                reply = error_reply(502, "backend websocket handshake invalid", route=route.key)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            status = None
            reply = error_reply(504, "backend timed out", route=route.key)
        except (aiohttp.ClientError, OSError) as error:
            status = None
            log.info("websocket backend unreachable for %s: %s", route.key, error)
            reply = error_reply(502, "backend unreachable", route=route.key)
        await orchestrator.upgrade_finished(ex, reply or Reply(101, []), BackendCall(status, perf_counter() - sent))
        return reply, backend_ws

    def _observed(self, ex: Exchange, status: int, seconds: float) -> None:
        if self.observe is not None:
            self.observe(ex, status, seconds)


async def deny(send: Any, reply: Reply, ex: Exchange) -> None:
    """Refuse the handshake with an HTTP answer (the ASGI WebSocket denial response)."""
    headers = reply.headers
    headers.extend(ex.response_headers)
    headers.append((b"x-request-id", ex.request_id.encode("latin-1")))
    await send({"type": "websocket.http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": reply.body})


class Relay:
    """Frames both ways between the client (ASGI) and the backend (aiohttp), until a close or idleness."""

    def __init__(self, receive: Any, send: Any, backend: aiohttp.ClientWebSocketResponse,
                 idle_timeout: float) -> None:
        self.receive = receive
        self.send = send
        self.backend = backend
        self.idle_timeout = idle_timeout
        self.loop = asyncio.get_running_loop()
        self.last_message = self.loop.time()

    async def run(self) -> None:
        pumps = {asyncio.ensure_future(self._client_to_backend()), asyncio.ensure_future(self._backend_to_client())}
        try:
            wait: float = self.idle_timeout
            while True:
                done, _ = await asyncio.wait(pumps, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if done:
                    for pump in done:
                        pump.result()  # a bug in a pump is raised here, not lost
                    return
                idle = self.loop.time() - self.last_message
                if idle >= self.idle_timeout:
                    await self._close_both(GOING_AWAY, "idle timeout")
                    return
                wait = self.idle_timeout - idle
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _client_to_backend(self) -> None:
        backend = self.backend
        while True:
            message = await self.receive()
            kind = message["type"]
            if kind == "websocket.receive":
                self.last_message = self.loop.time()
                text = message.get("text")
                try:
                    if text is not None:
                        await backend.send_str(text)
                    else:
                        await backend.send_bytes(message.get("bytes") or b"")
                except (aiohttp.ClientError, ConnectionError):
                    continue  # the backend is going: its close comes through the other pump
            elif kind == "websocket.disconnect":
                await backend.close(code=sendable(message.get("code")),
                                    message=(message.get("reason") or "").encode())
                return

    async def _backend_to_client(self) -> None:
        backend = self.backend
        while True:
            message = await backend.receive()
            kind = message.type
            if kind == aiohttp.WSMsgType.TEXT or kind == aiohttp.WSMsgType.BINARY:
                self.last_message = self.loop.time()
                field = "text" if kind == aiohttp.WSMsgType.TEXT else "bytes"
                try:
                    await self.send({"type": "websocket.send", field: message.data})
                except OSError:  # uvicorn's ClientDisconnected: its close comes through the other pump
                    continue
            elif kind == aiohttp.WSMsgType.CLOSE:
                await self._close_client(sendable(message.data), message.extra or "")
                return
            elif kind == aiohttp.WSMsgType.ERROR:
                error = message.data
                code = getattr(error, "code", None)
                await self._close_client(code if isinstance(code, int) else INTERNAL_ERROR, "backend error")
                return
            elif kind in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                code = backend.close_code
                await self._close_client(INTERNAL_ERROR if code is None else sendable(code), "backend went away")
                return

    async def _close_client(self, code: int, reason: str) -> None:
        try:
            await self.send({"type": "websocket.close", "code": code, "reason": reason})
        except (OSError, RuntimeError):  # uvicorn's ClientDisconnected, or a close already sent
            pass  # nothing left to tell the client

    async def _close_both(self, code: int, reason: str) -> None:
        await self._close_client(code, reason)
        await self.backend.close(code=code, message=reason.encode())
