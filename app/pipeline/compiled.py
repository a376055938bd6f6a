"""What the pipeline makes of a route's spec: built once when the route changes, read per request.

The router keeps it as ``Route.compiled`` (``Route[CompiledRoute]``) and builds it through the
orchestrator's ``_compile_route``. Each field says who fills it and who reads it; a stage keeps
the per-route structures it makes on first use here too, so that a request finds them with one
attribute lookup.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiohttp

from app.auth.cors.handler import CorsPolicy
from app.auth.ip_restriction.handler import IpRules
from app.auth.rules import RouteAuth
from app.breaker.stage import RouteBreakers
from app.observability.metrics import RouteMetrics
from app.pipeline.retry import RetryPolicy
from app.pipeline.stage import StagePlan
from app.transform.compiled import CompiledTransform


@dataclass(slots=True)
class CompiledRoute:
    # The stages that apply to the route, sorted by hook. Filled by the orchestrator
    # (_compile_route, and again by insert_stage); read by the orchestrator on every request.
    stages: StagePlan
    # The same for a WebSocket handshake on the route (no cache). Filled by the orchestrator with
    # ``stages``; read by its admit_upgrade and upgrade_finished.
    upgrade_stages: StagePlan
    # The backend call's connect and read timeouts. Filled by the orchestrator; read by its
    # _attempt (UpstreamClient.send).
    timeout: aiohttp.ClientTimeout
    # The largest request body forwarded, and body transformed. Filled by the orchestrator (the
    # route's max_body_size, else the server's); read by its _forward and by app.transform.apply.
    max_body: int
    # None: no retries. Filled by the orchestrator; read by its _forward.
    retry: RetryPolicy | None
    # The route's transform, None without one. Filled by the orchestrator; read by the orchestrator
    # (request and answer), and by the cache (app/cache/pending.py: the client's version is part of
    # the key; stage.py and warming.py: no background fetch skips it).
    transform: CompiledTransform | None = None
    # How https:// targets are verified (True: the system's CAs). Filled by the orchestrator from
    # the route's ca, client_cert and client_key; read by its _attempt (UpstreamClient.send).
    tls: ssl.SSLContext | bool = True
    # The route's circuit breakers. Filled on first use by the breaker stage (breakers_for), which
    # reads it per request; the admin API's circuit list fills it for routes no request used yet.
    breakers: RouteBreakers | None = None
    # The cache stage's lookup counters by X-Cache verdict (one-float cells of CACHE_LOOKUPS). Filled
    # on first use and read by the cache stage.
    cache_lookups: dict[bytes, list[float]] | None = None
    # The route's request series. Filled on first use and read by the proxy (app.edge.proxy).
    metrics: RouteMetrics | None = None
    # The route's authentication (methods, roles, refusals). Filled on first use by the auth stage
    # (rules_for), which reads it per request.
    auth: RouteAuth | None = None
    # The route's address rules. Filled on first use and read by the IP restriction stage.
    ip_rules: IpRules | None = None
    # The route's CORS policy. Filled on first use and read by the CORS stage.
    cors: CorsPolicy | None = None
