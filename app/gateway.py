"""The composition root: one gateway process, made of the edge, the pipeline and the control plane.

The only module that knows all three. The pipeline (``ApiGatewayOrchestrator``) builds its
components; this module wraps it in the proxy, hands the control plane the narrow objects it
manages (``ControlPlane``), and runs the whole as one ASGI app (``EdgeApp``) whose lifespan starts
and stops them.
"""

from __future__ import annotations

from app.config import GatewayConfig, load_config
from app.control.app import build_control_app
from app.control.config_sync import ConfigSync
from app.control.plane import ControlPlane
from app.edge.proxy import ProxyApp
from app.edge.server import EdgeApp
from app.edge.websocket import WebSocketProxy
from app.observability.access_log import AccessLog
from app.observability.tracing import Tracing
from app.pipeline.orchestrator import ApiGatewayOrchestrator
from app.store import create_store


class Gateway(EdgeApp):
    def __init__(self, config: GatewayConfig) -> None:
        self.orchestrator = orchestrator = ApiGatewayOrchestrator(config, create_store(config.redis))
        self.access_log = AccessLog() if config.server.access_log else None
        self.proxy_app = ProxyApp(orchestrator, self.access_log)
        # None unless OTEL_* asks for it: then the proxy is wrapped, else it runs bare.
        self.tracing = Tracing.from_env()
        proxy = self.proxy_app if self.tracing is None else self.tracing.wrap(self.proxy_app, orchestrator.router)
        # The config file's routes plus the admin API's changes kept in the store.
        self.config_sync = ConfigSync(config, orchestrator.router, orchestrator.store)
        self.control_plane = ControlPlane(
            config=config, router=orchestrator.router, config_sync=self.config_sync, store=orchestrator.store,
            rate_limiter=orchestrator.rate_limiter, breakers=orchestrator.circuit_breaker_stage,
            cache=orchestrator.cache_manager, activity=orchestrator.client_activity)
        websocket = WebSocketProxy(orchestrator, config.server.websocket.max_message_size, self.proxy_app.observe)
        super().__init__(config, proxy, build_control_app(self.control_plane), websocket)

    async def start(self) -> None:
        if self.access_log is not None:
            self.access_log.start()
        await self.orchestrator.start()
        await self.config_sync.start()

    async def close(self) -> None:
        await self.config_sync.close()
        await self.orchestrator.close()
        if self.tracing is not None:
            self.tracing.close()
        if self.access_log is not None:
            self.access_log.close()


def create_app(config: GatewayConfig | None = None) -> Gateway:
    """The ASGI app for uvicorn; without a config, the file and environment decide."""
    return Gateway(config or load_config())
