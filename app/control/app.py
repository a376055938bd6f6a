"""The control plane under ``/_gateway/``: a FastAPI app, never on the proxy path.

It mounts the modules of ``app/control/admin/``: health, readiness and metrics are open; everything else is
the admin API behind the bearer token (``app.control.admin.auth``). Every answer, errors included, is JSON
``{"error": ...}``; bad input is a 400 naming each field. Each module's router gets the few components of
the ``ControlPlane`` it uses.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.control.admin import audit as audit_admin
from app.control.admin import circuits, config_reload, config_view, health, ratelimits, routes, targets
from app.control.admin import cache as cache_admin
from app.control.admin.auth import AdminToken, AdminTokens, admin_guard
from app.control.audit import AdminAudit, AuditRecorder
from app.control import status
from app.control.plane import ControlPlane
from app.store import StoreError, StoreUnavailable

log = logging.getLogger("apigw.admin")

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "fields": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "reason": {"type": "string"}}}},
    },
    "required": ["error"],
}


def build_control_app(plane: ControlPlane) -> FastAPI:
    api = FastAPI(title="API gateway control plane", version="1",
                  openapi_url="/_gateway/openapi.json", docs_url="/_gateway/docs", redoc_url=None)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @api.exception_handler(RequestValidationError)
    async def bad_input(_: Request, error: RequestValidationError) -> JSONResponse:
        fields = [{"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in error.errors()]
        return JSONResponse({"error": "invalid input", "fields": fields}, status_code=400)

    @api.exception_handler(StoreUnavailable)
    async def store_down(_: Request, error: StoreUnavailable) -> JSONResponse:
        return JSONResponse({"error": "store unavailable", "detail": str(error)}, status_code=503,
                            headers={"Retry-After": "1"})

    @api.exception_handler(StoreError)
    async def store_error(_: Request, error: StoreError) -> JSONResponse:
        log.error("store error in the admin API: %s", error)
        return JSONResponse({"error": "store error", "detail": str(error)}, status_code=503)

    @api.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> JSONResponse:
        log.exception("admin API failed on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal gateway error"}, status_code=500)

    api.include_router(health.build_router(plane.stores, plane.config_sync, plane.lifecycle))
    api.include_router(status.build_page_router())  # the page holds no data: it asks for the token

    admin = plane.config.admin
    tokens = AdminTokens([AdminToken(admin.token),
                          *(AdminToken.hashed(t.sha256, t.name, t.role) for t in admin.tokens)])
    guard = [Depends(admin_guard(tokens))]
    audit = AdminAudit(plane.store, admin.audit_max_records, config_view.REPLICA)
    api.add_middleware(AuditRecorder, audit=audit)  # every change the guard let through is recorded
    for router in (routes.build_router(plane.router, plane.config_sync, plane.config.auth),
                   config_view.build_router(plane.config_sync), config_reload.build_router(plane.reload),
                   ratelimits.build_router(plane.rate_limiter), circuits.build_router(plane.breakers, plane.router),
                   targets.build_router(plane.router), cache_admin.build_router(plane.cache),
                   audit_admin.build_router(audit), status.build_router(plane, audit)):
        api.include_router(router, dependencies=guard)

    api.openapi = lambda: _openapi(api)  # type: ignore[method-assign]
    return api


def _openapi(api: FastAPI) -> dict[str, Any]:
    """FastAPI documents bad input as 422; this API answers 400 (and 401/403 for admin calls)."""
    if api.openapi_schema is None:
        schema = get_openapi(title=api.title, version=api.version, routes=api.routes,
                             description=api.description)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                answers = operation.get("responses", {})
                if answers.pop("422", None) is not None:
                    answers["400"] = {"description": "Invalid input: each bad field named",
                                      "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
                if operation.get("security"):
                    answers["401"] = {"description": "Missing or wrong admin token",
                                      "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
                    answers["403"] = {"description": "The admin API is off (no token configured)",
                                      "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
        schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
        schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
        api.openapi_schema = schema
    return api.openapi_schema
