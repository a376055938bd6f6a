"""The status page at ``/_gateway/`` and the JSON it polls, ``/_gateway/status``.

The JSON gathers what the components know (routes and target health from the router, circuit
states, fleet-wide cache statistics, the busiest clients and their remaining quota), each part on
its own: a component that is missing or failing makes its part say so, never the whole answer
fail. It shows client ids and backends, so it is mounted behind the admin token like the admin API
(no token configured: off). The page itself is static, ``status.html`` beside this module (package
data), with its CSS and JS inline and no external asset (its Content-Security-Policy allows none); it
asks for the token once and polls every 2 s.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Awaitable
from importlib.resources import files
from typing import Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from app.control.admin.config_view import REPLICA
from app.control.audit import AdminAudit
from app.control.plane import ControlPlane
from app.ratelimit.limits import RateLimitState
from app.ratelimit.protocol import usage_reply
from app.store import Store

BUSIEST = 10
LATEST_CHANGES = 5
PAGE = files(__package__).joinpath("status.html").read_text(encoding="utf-8")
STARTED = time.time()


# -- gathering ---------------------------------------------------------------------------------

async def _part(make: Awaitable[Any]) -> Any:
    """One part of the status; its failure is reported in its place."""
    try:
        return await make
    except Exception as error:  # a broken component must not take the page down
        return {"available": False, "error": f"{type(error).__name__}: {error}"}


def _routes(plane: ControlPlane) -> list[dict[str, Any]]:
    return [{
        "key": route.key, "path": route.path, "methods": list(route.methods), "enabled": route.enabled,
        "targets": [{"url": t.url, "weight": t.weight, "healthy": t.healthy} for t in route.balancer.targets],
    } for route in plane.router.routes]


async def _circuits(plane: ControlPlane) -> dict[str, Any]:
    items = []
    for name, values in sorted(plane.breakers.manager.get_all_stats().items()):
        values = dict(values)
        state = values.pop("state", "unknown")
        items.append({"name": name, "state": state, "stats": values})
    return {"available": True, "items": items}


async def _cache(plane: ControlPlane) -> dict[str, Any]:
    return {"available": True, "enabled": plane.config.cache.enabled, **await plane.cache.get_stats()}


async def _quota(plane: ControlPlane, client_id: str) -> dict[str, Any] | None:
    """The client's own limits (the seed's get_client_stats), and what it has left on each route
    that sets limits of its own."""
    limiter = plane.rate_limiter
    used = await limiter.get_client_stats(client_id)
    spec = limiter.manager.spec_for(client_id)
    quota: dict[str, Any] = {"burst_tokens": used.get("burst_tokens")}
    for window, field, limit_field in (("minute", "requests_this_minute", "requests_per_minute"),
                                       ("hour", "requests_this_hour", "requests_per_hour")):
        count = used.get(field)
        limit = getattr(spec, limit_field)
        remaining = max(0, limit - count) if limit is not None and count is not None else None
        quota[window] = {"used": count, "limit": limit, "remaining": remaining}
    quota["routes"] = await _route_quotas(plane, client_id)
    return quota


async def _route_quotas(plane: ControlPlane, client_id: str) -> list[dict[str, Any]]:
    """Per rate-limited route: the limit with the least left for this client. The limiter's own
    script asked at cost 0 (as get_client_stats does): it reads without counting."""
    asked = []
    for route in plane.router.routes:
        if route.spec.rate_limit is None:
            continue
        plan = plane.rate_limiter.plan(client_id, None, route)
        if plan.call is not None:
            asked.append((route, plan, plan.peek_call()))
    if not asked:
        return []
    replies = await plane.store.run(*(call for _, _, call in asked))
    out = []
    for (route, plan, _), reply in zip(asked, replies, strict=True):
        state = RateLimitState.of(usage_reply(reply).decision, plan.names)
        out.append({"route": route.key, "limit": state.limit, "remaining": state.remaining,
                    "reset_seconds": state.reset})
    return out


async def _clients(plane: ControlPlane) -> dict[str, Any]:
    activity = plane.activity
    busiest = await activity.busiest(BUSIEST)
    quotas = await asyncio.gather(*(_part(_quota(plane, client)) for client, _ in busiest))
    return {"available": True, "window_seconds": activity.window, "items": [
        {"client_id": client, "requests": count, "quota": quota}
        for (client, count), quota in zip(busiest, quotas, strict=True)]}


async def _answers(store: Store) -> bool:
    try:
        return await store.ping()
    except Exception:
        return False


async def _replica(plane: ControlPlane) -> dict[str, Any]:
    store = plane.store
    replica = {"id": REPLICA, "store": type(store).__name__,
               "shared": store.shared, "store_ok": await _answers(store), "uptime_seconds": round(time.time() - STARTED, 1),
               "config_version": plane.config_sync.version}
    if plane.cache_store is not None:  # the cache's own Redis (cache.redis)
        replica["cache_store_ok"] = await _answers(plane.cache_store)
    return replica


async def _audit(audit: AdminAudit) -> dict[str, Any]:
    return {"available": True, "items": [r.model_dump(mode="json") for r in await audit.latest(LATEST_CHANGES)]}


async def gather_status(plane: ControlPlane, audit: AdminAudit) -> dict[str, Any]:
    replica, circuits, cache, clients, changes = await asyncio.gather(
        _part(_replica(plane)), _part(_circuits(plane)), _part(_cache(plane)), _part(_clients(plane)),
        _part(_audit(audit)))
    try:
        routes: Any = _routes(plane)
        health: Any = plane.router.get_health_status()
    except Exception as error:
        routes = health = {"available": False, "error": f"{type(error).__name__}: {error}"}
    return jsonable_encoder({
        "generated_at": time.time(), "replica": replica, "health": health, "routes": routes,
        "circuits": circuits, "cache": cache, "clients": clients, "audit": changes,
    })


# -- the HTTP side -----------------------------------------------------------------------------

def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _page_headers() -> dict[str, str]:
    script = re.search(r"<script>(.*?)</script>", PAGE, re.S)
    style = re.search(r"<style>(.*?)</style>", PAGE, re.S)
    assert script is not None and style is not None
    return {
        # Only the page's own inline script and style, and requests back to this origin.
        "Content-Security-Policy": (f"default-src 'none'; script-src {_csp_hash(script.group(1))}; "
                                    f"style-src {_csp_hash(style.group(1))}; connect-src 'self'; "
                                    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def build_page_router() -> APIRouter:
    """The page: open, as it holds no data (it asks for the token, then polls the guarded JSON)."""
    router = APIRouter(tags=["status"])
    headers = _page_headers()

    @router.get("/_gateway", include_in_schema=False)
    async def status_page_redirect() -> RedirectResponse:
        return RedirectResponse("/_gateway/", status_code=307)

    # A page for browsers, not an API call: left out of the OpenAPI document (where every call
    # but health, readiness and metrics needs the token).
    @router.get("/_gateway/", response_class=HTMLResponse, include_in_schema=False)
    async def status_page() -> HTMLResponse:
        """The status page (HTML); it polls /_gateway/status with the admin token."""
        return HTMLResponse(PAGE, headers=headers)

    return router


def build_router(plane: ControlPlane, audit: AdminAudit) -> APIRouter:
    """``/_gateway/status``, mounted behind the admin guard (app/control/app.py)."""
    router = APIRouter(prefix="/_gateway", tags=["status"])

    @router.get("/status")
    async def status() -> JSONResponse:
        """What the status page shows: routes and target health, circuits, cache, busiest clients,
        the latest changes through the admin API."""
        return JSONResponse(await gather_status(plane, audit), headers={"Cache-Control": "no-store"})

    return router

