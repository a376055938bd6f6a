"""Liveness, readiness and the Prometheus scrape: open to anyone who can reach the port, like
every load balancer and Prometheus expects (no secrets in them)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.control.config_sync import ConfigSync
from app.lifecycle import Lifecycle
from app.observability import replica_metrics
from app.store import Store


def build_router(store: Store, sync: ConfigSync, lifecycle: Lifecycle) -> APIRouter:
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
        """Ready when the shared store can serve the request path (on Redis: every master answers
        and knows the scripts), and the process is not draining (SIGTERM came: take it out)."""
        if lifecycle.draining:
            ok, status = False, "draining"
        else:
            ok = await store.ready()
            status = "ready" if ok else "store unavailable"
        body = {"status": status, "store": type(store).__name__,
                "config_version": sync.version}
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/metrics", response_class=Response,
                responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    async def metrics() -> Response:
        """Every metric family of app/observability/metrics.py, in the Prometheus text format;
        under ``serve --workers``, summed over the workers."""
        return Response(replica_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
