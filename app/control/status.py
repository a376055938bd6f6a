"""The status page at ``/_gateway/`` and the JSON it polls, ``/_gateway/status``.

The JSON gathers what the components know (routes and target health from the router, circuit
states, fleet-wide cache statistics, the busiest clients and their remaining quota), each part on
its own: a component that is missing or failing makes its part say so, never the whole answer
fail. It shows client ids and backends, so it is mounted behind the admin token like the admin API
(no token configured: off). The page itself is static, one HTML file with its CSS and JS inline, no external
asset (its Content-Security-Policy allows none); it asks for the token once and polls every 2 s.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from app.control.admin.config_view import REPLICA
from app.store import ScriptCall

if TYPE_CHECKING:
    from app.pipeline.orchestrator import ApiGatewayOrchestrator
    from app.edge.server import Gateway

BUSIEST = 10
STARTED = time.time()


# -- gathering ---------------------------------------------------------------------------------

async def _part(make: Awaitable[Any]) -> Any:
    """One part of the status; its failure is reported in its place."""
    try:
        return await make
    except Exception as error:  # a broken component must not take the page down
        return {"available": False, "error": f"{type(error).__name__}: {error}"}


def _routes(orch: ApiGatewayOrchestrator) -> list[dict[str, Any]]:
    return [{
        "key": route.key, "path": route.path, "methods": list(route.methods), "enabled": route.enabled,
        "targets": [{"url": t.url, "weight": t.weight, "healthy": t.healthy} for t in route.balancer.targets],
    } for route in orch.router.routes]


async def _circuits(orch: ApiGatewayOrchestrator) -> dict[str, Any]:
    manager = getattr(orch, "circuit_breaker_manager", None)
    if manager is None or not hasattr(manager, "get_all_stats"):
        return {"available": False, "reason": "no circuit breaker on this gateway"}
    stats = manager.get_all_stats()
    if asyncio.iscoroutine(stats):
        stats = await stats
    items = []
    for name, values in sorted(stats.items()):
        values = dict(values)
        state = values.pop("state", "unknown")
        items.append({"name": name, "state": getattr(state, "value", state), "stats": values})
    return {"available": True, "items": items}


async def _cache(orch: ApiGatewayOrchestrator) -> dict[str, Any]:
    manager = getattr(orch, "cache_manager", None)
    if manager is None:
        return {"available": False, "reason": "no cache on this gateway"}
    return {"available": True, "enabled": orch.config.cache.enabled, **await manager.get_stats()}


async def _quota(orch: ApiGatewayOrchestrator, client_id: str) -> dict[str, Any] | None:
    """The client's own limits (the seed's get_client_stats), and what it has left on each route
    that sets limits of its own."""
    limiter = getattr(orch, "rate_limiter", None)
    if limiter is None or not hasattr(limiter, "get_client_stats"):
        return None
    used = await limiter.get_client_stats(client_id)
    manager = getattr(limiter, "manager", None)
    spec = manager.spec_for(client_id) if manager is not None and hasattr(manager, "spec_for") else None
    quota: dict[str, Any] = {"burst_tokens": used.get("burst_tokens")}
    for window, field, limit_field in (("minute", "requests_this_minute", "requests_per_minute"),
                                       ("hour", "requests_this_hour", "requests_per_hour")):
        count = used.get(field)
        limit = getattr(spec, limit_field, None) if spec is not None else None
        remaining = max(0, limit - count) if limit is not None and count is not None else None
        quota[window] = {"used": count, "limit": limit, "remaining": remaining}
    quota["routes"] = await _route_quotas(orch, limiter, client_id)
    return quota


async def _route_quotas(orch: ApiGatewayOrchestrator, limiter: Any, client_id: str) -> list[dict[str, Any]]:
    """Per rate-limited route: the limit with the least left for this client. The limiter's own
    script asked at cost 0 (as get_client_stats does): it reads without counting."""
    try:
        from app.ratelimit.limits import RateLimitState
    except ImportError:
        return []
    asked = []
    for route in orch.router.routes:
        if route.spec.rate_limit is None:
            continue
        plan = limiter.plan(client_id, None, route)
        if plan.call is not None:
            call = ScriptCall(plan.call.script, plan.call.keys, (0, *plan.call.args[1:]))
            asked.append((route, plan, call))
    if not asked:
        return []
    replies = await orch.store.run(*(call for _, _, call in asked))
    out = []
    for (route, plan, _), reply in zip(asked, replies, strict=True):
        state = RateLimitState.from_reply(reply, plan.names)
        out.append({"route": route.key, "limit": state.limit, "remaining": state.remaining,
                    "reset_seconds": state.reset})
    return out


async def _clients(orch: ApiGatewayOrchestrator) -> dict[str, Any]:
    activity = getattr(orch, "client_activity", None)
    if activity is None:
        return {"available": False, "reason": "client activity is not counted on this gateway"}
    busiest = await activity.busiest(BUSIEST)
    quotas = await asyncio.gather(*(_part(_quota(orch, client)) for client, _ in busiest))
    return {"available": True, "window_seconds": activity.window, "items": [
        {"client_id": client, "requests": count, "quota": quota}
        for (client, count), quota in zip(busiest, quotas, strict=True)]}


async def _replica(gateway: Gateway) -> dict[str, Any]:
    store = gateway.orchestrator.store
    try:
        store_ok = await store.ping()
    except Exception:
        store_ok = False
    sync = getattr(gateway, "config_sync", None)
    return {"id": REPLICA, "store": type(store).__name__,
            "shared": store.shared, "store_ok": store_ok, "uptime_seconds": round(time.time() - STARTED, 1),
            "config_version": getattr(sync, "version", None)}


async def gather_status(gateway: Gateway) -> dict[str, Any]:
    orch = gateway.orchestrator
    replica, circuits, cache, clients = await asyncio.gather(
        _part(_replica(gateway)), _part(_circuits(orch)), _part(_cache(orch)), _part(_clients(orch)))
    try:
        routes: Any = _routes(orch)
        health: Any = orch.router.get_health_status()
    except Exception as error:
        routes = health = {"available": False, "error": f"{type(error).__name__}: {error}"}
    return jsonable_encoder({
        "generated_at": time.time(), "replica": replica, "health": health, "routes": routes,
        "circuits": circuits, "cache": cache, "clients": clients,
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


def build_router(gateway: Gateway) -> APIRouter:
    """``/_gateway/status``, mounted behind the admin guard (app/control/app.py)."""
    router = APIRouter(prefix="/_gateway", tags=["status"])

    @router.get("/status")
    async def status() -> JSONResponse:
        """What the status page shows: routes and target health, circuits, cache, busiest clients."""
        return JSONResponse(await gather_status(gateway), headers={"Cache-Control": "no-store"})

    return router


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API gateway status</title>
<style>
:root { --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --muted: #57606a; --line: #d0d7de; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: 12px 20px; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; }
header span { color: #d0d7de; font-size: 13px; }
main { padding: 16px 20px; display: grid; gap: 16px; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 15px; margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.pill { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600; color: #fff; }
.up, .closed { background: var(--ok); } .down, .open { background: var(--bad); } .half_open, .disabled { background: var(--warn); }
.target { display: block; }
.big { font-size: 32px; font-weight: 700; }
.muted { color: var(--muted); }
.bar { height: 8px; background: #eaeef2; border-radius: 4px; overflow: hidden; min-width: 80px; }
.bar > div { height: 100%; background: var(--ok); }
.bar > div.low { background: var(--bad); }
#error { display: none; background: #ffebe9; border: 1px solid #ff8182; color: var(--bad); padding: 8px 20px; }
#login { display: none; }
input { font: inherit; padding: 4px 8px; width: 320px; }
button { font: inherit; padding: 4px 12px; }
</style>
</head>
<body>
<header><h1>API gateway</h1><span id="replica">connecting...</span><span id="updated"></span></header>
<div id="error"></div>
<main>
<section id="login" class="wide"><h2>Admin token</h2>
<p class="muted">The status needs the admin token (API_GATEWAY_ADMIN_TOKEN). It is kept in this tab only.</p>
<input id="token" type="password" autocomplete="off" placeholder="admin token"> <button id="use">Show status</button></section>
<section class="wide"><h2>Routes and targets</h2>
<table id="routes"><thead><tr><th>route</th><th>path</th><th>methods</th><th>targets (health, weight)</th><th>circuit</th></tr></thead><tbody></tbody></table></section>
<section><h2>Cache</h2><div id="cache"><span class="big" id="cache-hit-rate">-</span> <span class="muted">hit rate, fleet-wide</span>
<p id="cache-counts" class="muted"></p></div></section>
<section><h2>Circuits</h2>
<table id="circuits"><thead><tr><th>circuit</th><th>state</th><th>details</th></tr></thead><tbody></tbody></table>
<p id="circuits-note" class="muted"></p></section>
<section class="wide"><h2>Busiest clients <span class="muted" id="clients-window"></span></h2>
<table id="clients"><thead><tr><th>client</th><th>requests</th><th>minute quota left</th><th></th><th>hour quota left</th><th>burst tokens</th><th>left on limited routes</th></tr></thead><tbody></tbody></table>
<p id="clients-note" class="muted"></p></section>
</main>
<script>
"use strict";
const KEY = "apigw-admin-token";
const POLL_MS = 2000;
let timer = null;

function takeTokenFromHash() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function pill(word, cls) { return el("span", {class: "pill " + (cls || word)}, word); }

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

function pct(x) { return (100 * x).toFixed(1) + "%"; }

function circuitFor(route, circuits) {
  if (!circuits || !circuits.items) return null;
  const names = [route.key, ...route.targets.map(t => t.url)];
  const mine = circuits.items.filter(c => names.some(n => c.name === n || c.name.includes(n)));
  if (!mine.length) return null;
  const rank = {open: 3, half_open: 2, closed: 1};
  mine.sort((a, b) => (rank[String(b.state).toLowerCase()] || 0) - (rank[String(a.state).toLowerCase()] || 0));
  return mine[0];
}

function stateClass(state) { return String(state).toLowerCase().replace("-", "_"); }

function renderRoutes(s) {
  const tbody = document.querySelector("#routes tbody");
  if (!Array.isArray(s.routes)) { fill(tbody, [el("tr", {}, el("td", {colspan: 5}, "unavailable"))]); return; }
  fill(tbody, s.routes.map(r => {
    const targets = el("td", {});
    for (const t of r.targets) {
      targets.append(el("span", {class: "target"}, pill(t.healthy ? "up" : "down"), " ", el("code", {}, t.url), " ",
                        el("span", {class: "muted"}, "w" + t.weight)));
    }
    const c = circuitFor(r, s.circuits);
    const circuit = c ? pill(stateClass(c.state)) : el("span", {class: "muted"}, "-");
    const name = r.enabled ? el("code", {}, r.key) : el("span", {}, el("code", {}, r.key), " ", pill("disabled"));
    return el("tr", {"data-route": r.key}, el("td", {}, name), el("td", {}, el("code", {}, r.path)),
              el("td", {}, r.methods.join(" ")), targets, el("td", {class: "circuit"}, circuit));
  }));
}

function renderCircuits(s) {
  const tbody = document.querySelector("#circuits tbody");
  const note = document.getElementById("circuits-note");
  const c = s.circuits || {};
  if (!c.available) { fill(tbody, []); note.textContent = c.reason || c.error || "unavailable"; return; }
  note.textContent = c.items.length ? "" : "no circuit has seen traffic yet";
  fill(tbody, c.items.map(item => {
    const st = item.stats || {};
    const shown = [["failure_count", "failures"], ["success_count", "successes"], ["rejected_count", "refused"],
                   ["state_changes", "changes"]].filter(([k]) => typeof st[k] === "number").map(([k, label]) => label + " " + st[k]);
    if (st.open_seconds_left > 0) shown.push("half-open in " + Math.ceil(st.open_seconds_left) + " s");
    if (st.local_only) shown.push("local state only (store unreachable)");
    const details = shown.join(", ") + (shown.length ? " (this replica)" : "");
    return el("tr", {"data-circuit": item.name}, el("td", {}, el("code", {}, item.name)),
              el("td", {}, pill(stateClass(item.state))), el("td", {class: "muted"}, details));
  }));
}

function renderCache(s) {
  const c = s.cache || {};
  const rate = document.getElementById("cache-hit-rate");
  const counts = document.getElementById("cache-counts");
  if (!c.available) { rate.textContent = "-"; counts.textContent = c.reason || c.error || "unavailable"; return; }
  rate.textContent = pct(c.hit_rate || 0);
  counts.textContent = c.hits + " hits, " + c.misses + " misses, " + c.size + " entries" + (c.enabled === false ? " (off)" : "");
}

function quotaCell(q) {
  if (!q || q.remaining === null || q.remaining === undefined) return el("td", {class: "muted"}, "-");
  return el("td", {}, q.remaining + " of " + q.limit);
}

function quotaBar(q) {
  if (!q || !q.limit) return el("td", {});
  const share = Math.max(0, Math.min(1, q.remaining / q.limit));
  const fillBar = el("div", {class: share < 0.2 ? "low" : ""});
  fillBar.style.width = (100 * share).toFixed(0) + "%";  // CSSOM: the CSP allows no style attribute
  return el("td", {}, el("div", {class: "bar"}, fillBar));
}

function routeQuotas(routes) {
  const cell = el("td", {class: "route-quotas"});
  for (const r of routes || []) {
    cell.append(el("span", {class: "target"}, el("code", {}, r.route), " ",
                   el("span", {class: r.remaining === 0 ? "pill open" : ""}, r.remaining + " of " + r.limit)));
  }
  if (!cell.childNodes.length) cell.append(el("span", {class: "muted"}, "-"));
  return cell;
}

function renderClients(s) {
  const tbody = document.querySelector("#clients tbody");
  const note = document.getElementById("clients-note");
  const c = s.clients || {};
  if (!c.available) { fill(tbody, []); note.textContent = c.reason || c.error || "unavailable"; return; }
  document.getElementById("clients-window").textContent = "(requests in the last " + c.window_seconds + "-" + 2 * c.window_seconds + " s, fleet-wide)";
  note.textContent = c.items.length ? "" : "no requests yet";
  fill(tbody, c.items.map(item => {
    const q = item.quota && !item.quota.error ? item.quota : null;
    return el("tr", {"data-client": item.client_id}, el("td", {}, el("code", {}, item.client_id)),
              el("td", {class: "requests"}, item.requests), quotaCell(q && q.minute), quotaBar(q && q.minute),
              quotaCell(q && q.hour), el("td", {}, q && q.burst_tokens !== null && q.burst_tokens !== undefined ? q.burst_tokens : "-"),
              routeQuotas(q && q.routes));
  }));
}

function render(s) {
  const r = s.replica || {};
  document.getElementById("replica").textContent = "replica " + r.id + ", " + r.store + (r.store_ok ? " (answering)" : " (NOT answering)") +
    (r.config_version !== null && r.config_version !== undefined ? ", config v" + r.config_version : "");
  document.getElementById("updated").textContent = "updated " + new Date(s.generated_at * 1000).toLocaleTimeString();
  renderRoutes(s); renderCircuits(s); renderCache(s); renderClients(s);
}

function showError(text) {
  const box = document.getElementById("error");
  box.textContent = text;
  box.style.display = text ? "block" : "none";
}

async function poll() {
  clearTimeout(timer);
  const token = sessionStorage.getItem(KEY) || "";
  try {
    const answer = await fetch("/_gateway/status", {headers: {"Authorization": "Bearer " + token}, cache: "no-store"});
    if (answer.status === 401 || answer.status === 403) {
      const body = await answer.json().catch(() => ({}));
      document.getElementById("login").style.display = "block";
      showError(body.error || "not authorized");
      return;  // until a token is given
    }
    if (!answer.ok) throw new Error("status " + answer.status);
    document.getElementById("login").style.display = "none";
    render(await answer.json());
    showError("");
  } catch (e) {
    showError("cannot reach the gateway: " + e.message);
  }
  timer = setTimeout(poll, POLL_MS);
}

document.getElementById("use").addEventListener("click", () => {
  sessionStorage.setItem(KEY, document.getElementById("token").value);
  poll();
});
takeTokenFromHash();
poll();
</script>
</body>
</html>
"""
