"""The ASGI application: ``/_gateway/`` goes to the control plane, everything else to the proxy.

With ``admin.listen`` the control plane has a listener of its own (``EdgeApp.admin``, run beside
this one by app/edge/listener.py), and the data port keeps of it only health and readiness (and
metrics when ``admin.metrics_on_data_port``): nothing of the admin API faces the data port's clients.

``EdgeApp`` knows the two apps and the process's life cycle, not what they are made of: the
composition root (app/gateway.py) builds them and says what starting and stopping means.
"""

from __future__ import annotations

import gc
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from app.config import GatewayConfig
from app.edge.head import EdgeRefusal
from app.lifecycle import Lifecycle

log = logging.getLogger("apigw.server")

CONTROL_PREFIX = "/_gateway"
# What the data port serves of the control plane when the admin API has its own listener.
DATA_PORT_CONTROL = frozenset({CONTROL_PREFIX + "/health", CONTROL_PREFIX + "/ready"})
METRICS_PATH = CONTROL_PREFIX + "/metrics"
_NOT_HERE = b'{"error":"not found"}'
YOUNG_GENERATION_THRESHOLD = 2000

AsgiApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class EdgeApp:
    def __init__(self, config: GatewayConfig, proxy: AsgiApp, control: AsgiApp,
                 websocket: AsgiApp | None = None, lifecycle: Lifecycle | None = None) -> None:
        self.config = config
        # Serving or draining: the listeners begin the drain, readiness reports it.
        self.lifecycle = lifecycle or Lifecycle()
        self.proxy = proxy
        self.control = control
        # WebSocket handshakes outside /_gateway/ (None: every one is refused).
        self.websocket = websocket
        # The data listener's TLS (server.tls), None for plain HTTP; app/edge/listener.py serves it.
        self.tls_context: ssl.SSLContext | None = None
        # None: the data port serves the whole control plane (no admin listener).
        self.data_port_control: frozenset[str] | None = None
        if config.admin.listen is not None:
            self.data_port_control = DATA_PORT_CONTROL | (
                {METRICS_PATH} if config.admin.metrics_on_data_port else set())

    async def start(self) -> None:
        """What lifespan start-up starts (the composition root's components)."""

    def refused(self, refusal: EdgeRefusal) -> None:
        """A request the client-side protocol answered itself, before this app saw it."""

    async def close(self) -> None:
        """What lifespan shutdown stops."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(CONTROL_PREFIX) and (len(path) == len(CONTROL_PREFIX) or path[9] == "/"):
                if self.data_port_control is None or path in self.data_port_control:
                    await self.control(scope, receive, send)
                else:
                    await _not_found(send)
            else:
                await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            path = scope["path"]
            if self.websocket is None or path.startswith(CONTROL_PREFIX + "/") or path == CONTROL_PREFIX:
                await _refuse_websocket(receive, send)  # the control plane has no WebSockets
            else:
                await self.websocket(scope, receive, send)

    async def admin(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The admin listener's app: the control plane and nothing else. Its server runs without a
        lifespan: the data listener's starts and stops the gateway for both."""
        if scope["type"] == "http":
            await self.control(scope, receive, send)
        elif scope["type"] == "websocket":
            await _refuse_websocket(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as error:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                # What start-up made (modules, schemas, compiled routes, connections: ~100k objects)
                # lives as long as the process. Kept out of the collector's sight, a full collection
                # walks only what requests made: walking it all took 170 ms here, a pause that
                # every request in flight waits out.
                gc.freeze()
                # The youngest generation is collected after 700 more allocations than frees, by
                # default: under load the objects of the requests in flight cross that many times a
                # second, and each collection walks them all only to free nothing (requests free
                # their own by reference counting). Measured under wrk on the proxy-only route:
                # 2,140 collections in 10 s costing 4% of the CPU at 700; 70 to 200, costing under
                # 1%, at 2,000, each under a millisecond.
                gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _not_found(send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(_NOT_HERE))]})
    await send({"type": "http.response.body", "body": _NOT_HERE})


async def _refuse_websocket(receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.http.response.start", "status": 404, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(_NOT_HERE))]})
    await send({"type": "websocket.http.response.body", "body": _NOT_HERE})
