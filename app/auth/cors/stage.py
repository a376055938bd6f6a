"""CORS in the request pipeline: a preflight is answered here, before the rate limit, the
credentials and the backend (a browser sends it without credentials, and it changes nothing); any
other request from a page gets the route's CORS headers on whatever answers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.auth.cors.handler import ORIGIN, REQUEST_METHOD, CorsPolicy
from app.pipeline.exchange import Exchange, Reply
from app.pipeline.stage import Stage

if TYPE_CHECKING:
    from app.routing.router import Route


class CorsStage(Stage):
    name = "cors"

    def applies_to(self, route: Route | None) -> bool:
        return route is not None and route.spec.cors is not None

    @staticmethod
    def policy_for(route: Route) -> CorsPolicy:
        policy = route.compiled.cors
        if policy is None:
            assert route.spec.cors is not None
            policy = route.compiled.cors = CorsPolicy(route.spec.cors)
        return policy

    async def prepare(self, ex: Exchange, route: Route | None) -> Reply | None:
        assert route is not None  # applies_to: routes with cors only
        policy = route.compiled.cors or self.policy_for(route)
        origin = ex.header(ORIGIN)
        if origin is not None and ex.method == "OPTIONS" and ex.header(REQUEST_METHOD) is not None:
            return policy.preflight(ex)
        ex.response_headers += policy.headers_for(origin)
        return None
