"""What the control plane manages, handed over by the composition root (app/gateway.py).

Each admin router gets the few of these it uses (``app.control.app``), never the gateway: the
control plane knows the components it reads and changes, not how the process is put together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.breaker.stage import CircuitBreakerStage
from app.cache.manager import ApiCacheManager
from app.config import GatewayConfig
from app.control.activity import ClientActivity
from app.control.config_sync import ConfigSync
from app.lifecycle import Lifecycle
from app.ratelimit.limiter import ApiGatewayRateLimiter
from app.reload import ReloadReport
from app.routing.router import ApiGatewayRouter
from app.store import Store


@dataclass(frozen=True, slots=True)
class ControlPlane:
    config: GatewayConfig  # the admin token; the status page's cache section (cache.enabled)
    router: ApiGatewayRouter[Any]  # the routes admin, targets, circuits and the status page read it
    config_sync: ConfigSync  # route changes (the routes admin), the effective config, readiness
    store: Store  # readiness, and the status page's replica and route quotas
    rate_limiter: ApiGatewayRateLimiter  # the rate limits admin; the status page's quotas
    breakers: CircuitBreakerStage  # every route's breakers (its manager holds them): circuits admin, status
    cache: ApiCacheManager  # the cache admin (stats, invalidation); the status page's cache section
    activity: ClientActivity  # the status page's busiest clients
    lifecycle: Lifecycle  # readiness: false once the process drains
    # Reads the config file again and applies it (the config reload admin); None: no reloading here.
    reload: Callable[[str], Awaitable[ReloadReport]] | None = None
    # The cache's own store (cache.redis), for readiness and the status page; None: it shares store.
    cache_store: Store | None = None

    @property
    def stores(self) -> dict[str, Store]:
        """Each store the request path needs, by the config section that names it."""
        return {"redis": self.store} if self.cache_store is None else {"redis": self.store, "cache.redis": self.cache_store}
