"""The composition root: one gateway process, made of the edge, the pipeline and the control plane.

The only module that knows all three. The pipeline (``ApiGatewayOrchestrator``) builds its
components; this module wraps it in the proxy, hands the control plane the narrow objects it
manages (``ControlPlane``), and runs the whole as one ASGI app (``EdgeApp``) whose lifespan starts
and stops them.

What one config makes is a ``Generation``. A reloaded config file (app/reload.py) builds a new one
beside the running one, on the same store, upstream pool, access log and config sync; starts its
components; then swaps the edge's two references to it in one step, with no await between. A request
holds the proxy it started on, so it finishes on the config it started with; the replaced
generation's components are closed once its last request has been answered.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass

from app.background import stop_tasks
from app.config import GatewayConfig, load_config
from app.control.app import build_control_app
from app.control.config_sync import ConfigSync
from app.control.plane import ControlPlane
from app.edge.head import EdgeRefusal
from app.edge.proxy import ProxyApp
from app.edge.server import AsgiApp, EdgeApp
from app.edge.tls import ServerTls
from app.edge.upstream import UpstreamClient
from app.edge.websocket import WebSocketProxy
from app.lifecycle import Lifecycle
from app.observability.access_log import AccessLog
from app.observability.tracing import Tracing
from app.pipeline.orchestrator import ApiGatewayOrchestrator
from app.reload import ConfigFile, ReloadReport, Reloader
from app.store import Store, create_store

log = logging.getLogger("apigw.gateway")

# A replaced generation whose requests are still running after this long (a stalled stream) is
# closed all the same: its components' background work must not run for ever.
RETIRE_WITHIN = 300.0
SIGHUP = "SIGHUP"  # a reload's trigger, as the log names it


@dataclass(frozen=True, slots=True)
class Generation:
    """Every part one config made, compiled routes included; never changed once serving."""

    config: GatewayConfig
    orchestrator: ApiGatewayOrchestrator
    proxy_app: ProxyApp
    proxy: AsgiApp  # proxy_app, traced when tracing is on
    control_plane: ControlPlane
    control: AsgiApp
    websocket: AsgiApp


class Gateway(EdgeApp):
    def __init__(self, config: GatewayConfig, source: ConfigFile | None = None) -> None:
        """``source``: the file ``config`` was read from, read again on SIGHUP (when this process's
        main thread runs the loop) and on the admin API's reload; None, no reloading."""
        self.store: Store = create_store(config.redis)
        # The cache's own Redis when cache.redis names one; a restart-only setting, like redis.
        self.cache_store: Store = create_store(config.cache.redis) if config.cache.redis is not None else self.store
        self.upstream = UpstreamClient(config.server.upstream_max_connections, config.server.upstream_keepalive)
        self.access_log = AccessLog() if config.server.access_log else None
        # None unless OTEL_* asks for it: then the proxy is wrapped, else it runs bare.
        self.tracing = Tracing.from_env()
        self.reloader = Reloader(source, config, self._apply) if source is not None else None
        self._on_sighup_installed = False
        self._reloads: set[asyncio.Task[object]] = set()
        self._retiring: list[Generation] = []  # replaced, with requests still running
        self._retire_tasks: set[asyncio.Task[None]] = set()
        orchestrator = self._orchestrator(config)
        # The config file's routes plus the admin API's changes kept in the store.
        self.config_sync = ConfigSync(config, orchestrator.router, self.store)
        # Serving or draining: the process's, whatever config generation is running.
        self.lifecycle = Lifecycle()
        self.generation = self._generation(config, orchestrator)
        super().__init__(config, self.generation.proxy, self.generation.control, self.generation.websocket,
                         self.lifecycle)
        # HTTPS on the data listener; a reload reads its certificate and key again.
        self.tls = ServerTls(config.server.tls) if config.server.tls is not None else None
        self.tls_context = self.tls.context if self.tls is not None else None

    def _orchestrator(self, config: GatewayConfig) -> ApiGatewayOrchestrator:
        return ApiGatewayOrchestrator(config, self.store, self.upstream, cache_store=self.cache_store)

    def _generation(self, config: GatewayConfig, orchestrator: ApiGatewayOrchestrator) -> Generation:
        proxy_app = ProxyApp(orchestrator, self.access_log)
        proxy = proxy_app if self.tracing is None else self.tracing.wrap(proxy_app, orchestrator.router)
        plane = ControlPlane(
            config=config, router=orchestrator.router, config_sync=self.config_sync, store=self.store,
            rate_limiter=orchestrator.rate_limiter, breakers=orchestrator.circuit_breaker_stage,
            cache=orchestrator.cache_manager, activity=orchestrator.client_activity, lifecycle=self.lifecycle,
            reload=self._reload if self.reloader is not None else None,
            cache_store=self.cache_store if self.cache_store is not self.store else None)
        websocket = WebSocketProxy(orchestrator, config.server.websocket.max_message_size, proxy_app.observe)
        return Generation(config, orchestrator, proxy_app, proxy, plane, build_control_app(plane), websocket)

    # What callers (tests, tools) reach for: always the running generation's.
    @property
    def orchestrator(self) -> ApiGatewayOrchestrator:
        return self.generation.orchestrator

    @property
    def proxy_app(self) -> ProxyApp:
        return self.generation.proxy_app

    @property
    def control_plane(self) -> ControlPlane:
        return self.generation.control_plane

    # -- life cycle -----------------------------------------------------------------------------

    def refused(self, refusal: EdgeRefusal) -> None:
        self.proxy_app.refused(refusal)

    async def start(self) -> None:
        if self.access_log is not None:
            self.access_log.start()
        await self.orchestrator.start()
        await self.config_sync.start()
        # Every channel the parts subscribed to while starting is listened to before the replica
        # serves: a change another replica makes next is not missed (bounded: a Redis that is down
        # does not hold the start up).
        await self.store.listening()
        # Signal handlers belong to the main thread (a gateway in a test's thread has none).
        if self.reloader is not None and threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._on_sighup_installed = True

    async def close(self) -> None:
        if self._on_sighup_installed:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._on_sighup_installed = False
        await stop_tasks([*self._reloads, *self._retire_tasks])
        for generation in list(self._retiring):
            await self._close_generation(generation)
        await self.config_sync.close()
        await self.orchestrator.close()
        if self.tracing is not None:
            self.tracing.close()
        if self.access_log is not None:
            self.access_log.close()

    # -- reloading ------------------------------------------------------------------------------

    async def _reload(self, trigger: str) -> ReloadReport:
        assert self.reloader is not None
        report = await self.reloader.reload(trigger)
        if report.applied:
            self.lifecycle.config_version = report.version
            # The admin API reached one worker; a SIGHUP reaches all of them through the parent.
            if trigger != SIGHUP and self.lifecycle.on_reloaded is not None:
                self.lifecycle.on_reloaded()
        return report

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload(SIGHUP))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _apply(self, config: GatewayConfig) -> None:
        """Build every part from ``config``, start it, and serve with it from the next request on."""
        orchestrator = self._orchestrator(config)
        # Started before it serves (key sets, subscriptions, runtime limits); routes the API changed
        # meanwhile are applied again in the swap below.
        orchestrator.router.sync_routes(self.config_sync.effective_routes_over(config))
        try:
            await orchestrator.start_components()
            if self.tls is not None and config.server.tls is not None:
                self.tls.load(config.server.tls)  # renewed certificates, at the same paths or new ones
        except BaseException:
            await orchestrator.close_components()
            raise
        generation = self._generation(config, orchestrator)
        # The swap: no await from here to the end, so no request sees half of it.
        self.config_sync.rebase(config, orchestrator.router)
        old, self.generation = self.generation, generation
        self.config, self.proxy, self.control = config, generation.proxy, generation.control
        self.websocket = generation.websocket
        self._retiring.append(old)
        task = asyncio.get_running_loop().create_task(self._retire(old), name="apigw-retire-config")
        self._retire_tasks.add(task)
        task.add_done_callback(self._retire_tasks.discard)

    async def _retire(self, old: Generation) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETIRE_WITHIN
        while old.proxy_app.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if old.proxy_app.in_flight:
            log.warning("closing the replaced config's parts with %d request(s) still running",
                        old.proxy_app.in_flight)
        try:
            await self._close_generation(old)
        except Exception:
            log.exception("closing the replaced config's parts failed")

    async def _close_generation(self, generation: Generation) -> None:
        if generation in self._retiring:
            self._retiring.remove(generation)
        await generation.orchestrator.close_components()


def create_app(config: GatewayConfig | None = None) -> Gateway:
    """The ASGI app for uvicorn; without a config, the file and environment decide."""
    return Gateway(config or load_config())
