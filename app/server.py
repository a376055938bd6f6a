"""The ASGI application: ``/_gateway/`` goes to the control plane, everything else to the proxy."""

from __future__ import annotations

import logging
from typing import Any

from app.config import GatewayConfig, load_config
from app.config_sync import ConfigSync
from app.control import build_control_app
from app.orchestrator import ApiGatewayOrchestrator
from app.proxy import ProxyApp
from app.store import create_store

log = logging.getLogger("apigw.server")

CONTROL_PREFIX = "/_gateway"


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.orchestrator = ApiGatewayOrchestrator(config, create_store(config.redis))
        self.proxy = ProxyApp(self.orchestrator)
        # The config file's routes plus the admin API's changes kept in the store.
        self.config_sync = ConfigSync(config, self.orchestrator.router, self.orchestrator.store)
        self.control = build_control_app(self)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(CONTROL_PREFIX) and (len(path) == len(CONTROL_PREFIX) or path[9] == "/"):
                await self.control(scope, receive, send)
            else:
                await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websockets are not proxied (yet): refuse the handshake cleanly
            await send({"type": "websocket.close", "code": 1003})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.orchestrator.start()
                    await self.config_sync.start()
                except Exception as error:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.config_sync.close()
                await self.orchestrator.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(config: GatewayConfig | None = None) -> Gateway:
    """The ASGI app for uvicorn; without a config, the file and environment decide."""
    return Gateway(config or load_config())

