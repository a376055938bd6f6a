"""Liveness, readiness and the Prometheus scrape: open to anyone who can reach the port, like
every load balancer and Prometheus expects (no secrets in them)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.control.config_sync import ConfigSync
from app.lifecycle import Lifecycle
from app.observability import replica_metrics
from app.store import Store


def build_router(stores: Mapping[str, Store], sync: ConfigSync, lifecycle: Lifecycle) -> APIRouter:
    """``stores``: every store the request path needs, by the config section that names it
    (``redis``, and ``cache.redis`` when the cache has a Redis of its own)."""
    router = APIRouter(prefix="/_gateway", tags=["health"])

    @router.get("/health")
    async def health() -> dict[str, Any]:
        """The process is up and serving; under ``serve --workers``, which worker answered."""
        if lifecycle.worker is None:
            return {"status": "ok"}
        return {"status": "ok", "worker": lifecycle.worker, "pid": os.getpid(),
                "config_version": lifecycle.config_version}

    @router.get("/ready")
    async def ready() -> JSONResponse:
        """Ready when every store can serve the request path (on Redis: every master answers and
        knows the scripts), the cache's own one included, and the process is not draining (SIGTERM
        came: take it out). ``down`` names the stores that cannot, by their config section."""
        down: list[str] = []
        if lifecycle.draining:
            ok, status = False, "draining"
        else:
            verdicts = await asyncio.gather(*(store.ready() for store in stores.values()))
            down = [name for name, ready in zip(stores, verdicts, strict=True) if not ready]
            ok = not down
            status = "ready" if ok else "store unavailable: " + ", ".join(down)
        body: dict[str, Any] = {"status": status, "store": type(stores["redis"]).__name__,
                                "config_version": sync.version}
        if down:
            body["down"] = down
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/metrics", response_class=Response,
                responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    async def metrics() -> Response:
        """Every metric family of app/observability/metrics.py, in the Prometheus text format;
        under ``serve --workers``, summed over the workers."""
        return Response(replica_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
