"""The ASGI application: ``/_gateway/`` goes to the control plane, everything else to the proxy."""

from __future__ import annotations

import gc
import logging
from typing import Any

from app.observability.access_log import AccessLog
from app.config import GatewayConfig, load_config
from app.control.config_sync import ConfigSync
from app.control.app import build_control_app
from app.pipeline.orchestrator import ApiGatewayOrchestrator
from app.edge.proxy import ProxyApp
from app.store import create_store
from app.observability.tracing import Tracing

log = logging.getLogger("apigw.server")

CONTROL_PREFIX = "/_gateway"
YOUNG_GENERATION_THRESHOLD = 2000


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.orchestrator = ApiGatewayOrchestrator(config, create_store(config.redis))
        self.access_log = AccessLog() if config.server.access_log else None
        self.proxy_app = ProxyApp(self.orchestrator, self.access_log)
        # None unless OTEL_* asks for it: then the proxy is wrapped, else it runs bare.
        self.tracing = Tracing.from_env()
        self.proxy = (self.proxy_app if self.tracing is None
                      else self.tracing.wrap(self.proxy_app, self.orchestrator.router))
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
                    if self.access_log is not None:
                        self.access_log.start()
                    await self.orchestrator.start()
                    await self.config_sync.start()
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
                await self.config_sync.close()
                await self.orchestrator.close()
                if self.tracing is not None:
                    self.tracing.close()
                if self.access_log is not None:
                    self.access_log.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(config: GatewayConfig | None = None) -> Gateway:
    """The ASGI app for uvicorn; without a config, the file and environment decide."""
    return Gateway(config or load_config())

