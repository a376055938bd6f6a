"""The client side's WebSocket protocol: uvicorn's (on the websockets library's sans-I/O handshake
and framing), given the request as the edge's HTTP protocol checked it.

The HTTP protocol (app/edge/http_protocol.py) reads and checks the handshake's head under
``server.limits`` like any request's, normalises its path, then hands the connection over. The
websockets library checks the handshake itself (method, ``Sec-WebSocket-Key``, version: a bad one is
answered 400 or 426 before the gateway's app hears of it), answers pings, and closes with 1009 a
message over ``server.websocket.max_message_size`` (uvicorn's ``ws_max_size``).

The scope it makes differs from uvicorn's as the HTTP one does: ``path`` is the normalised path
(what the router matches), ``raw_path`` its percent-encoded form (what the backend receives), and
``apigw.received_path`` the path as the client sent it when that differs. It also carries
``method`` (always GET), so that the pipeline reads it as it reads any request.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from app.edge.paths import RECEIVED_PATH


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    # The handshake's scope as the HTTP protocol made it; set by it before the handshake is read.
    http_scope: Any = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # No scope when the library refused the handshake; the app's task, when there is one, has
        # not started yet and reads the scope as completed here.
        scope: dict[str, Any] | None = getattr(self, "scope", None)
        made = self.http_scope
        if scope is not None and made is not None:
            for name in ("path", "raw_path", RECEIVED_PATH):
                if name in made:
                    scope[name] = made[name]
            scope["method"] = "GET"
