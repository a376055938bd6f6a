"""The control plane under ``/_gateway/``: a FastAPI app, never on the proxy path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.cache import admin as cache_admin

if TYPE_CHECKING:
    from app.server import Gateway


def build_control_app(gateway: Gateway) -> FastAPI:
    api = FastAPI(title="API gateway control plane", openapi_url="/_gateway/openapi.json",
                  docs_url="/_gateway/docs", redoc_url=None)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code,
                              headers=getattr(error, "headers", None))

    @api.exception_handler(RequestValidationError)
    async def bad_input(_: Request, error: RequestValidationError) -> JSONResponse:
        fields = [{"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in error.errors()]
        return JSONResponse({"error": "invalid input", "fields": fields}, status_code=400)

    @api.get("/_gateway/health", tags=["health"])
    async def health() -> dict[str, Any]:
        """The process is up and serving."""
        return {"status": "ok"}

    @api.get("/_gateway/ready", tags=["health"])
    async def ready() -> JSONResponse:
        """Ready when the shared store answers."""
        store = gateway.orchestrator.store
        ok = await store.ping()
        body = {"status": "ready" if ok else "store unavailable", "store": type(store).__name__}
        return JSONResponse(body, status_code=200 if ok else 503)

    guard = [Depends(cache_admin.bearer_guard(gateway.config.admin.token))]
    api.include_router(cache_admin.build_router(gateway), dependencies=guard)

    return api
