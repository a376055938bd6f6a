"""CORS in the request pipeline: a preflight is answered here, before the rate limit, the
credentials and the backend (a browser sends it without credentials, and it changes nothing); any
other request from a page gets the route's CORS headers on whatever answers it. On such a route the
route's policy owns every ``Access-Control-*`` header of the answer: the backend's own are dropped
(before the cache keeps the answer), else a browser would see two Allow-Origin values and refuse it,
or a backend's ``*`` would let in an origin the route does not allow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.auth.cors.handler import ORIGIN, REQUEST_METHOD, CorsPolicy
from app.pipeline.exchange import Exchange, Reply
from app.pipeline.stage import Stage
from app.store import ScriptCall

if TYPE_CHECKING:
    from app.routing.router import Route


_CORS_PREFIX = b"access-control-"  # names as forwardable_response_headers gives them: lower case


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

    def completion_call(self, ex: Exchange, route: Route, reply: Reply) -> ScriptCall | None:
        """Nothing to write: the hook that sees the backend's answer before the cache stores it."""
        if reply.from_backend:
            headers = reply.headers
            for name, _ in headers:
                if name.startswith(_CORS_PREFIX):
                    reply.headers = [h for h in headers if not h[0].startswith(_CORS_PREFIX)]
                    break
        return None
