"""Rate limiting as the pipeline's first stage: identify the client, then one script call (sent in
the same round trip as the cache lookup) decides and charges every limit of the request.

Admitted or not, every answer of a limited route carries RateLimit-* and X-RateLimit-*; a refusal is
a 429 with the true Retry-After. When the store can't be asked, the route's failure policy (else the
global one) decides: fail_open admits without headers, fail_closed answers 503 — never a 500.
"""

from __future__ import annotations

from app.pipeline.exchange import Exchange, Reply, error_reply
from app.observability.metrics import RATE_LIMITED
from app.pipeline.stage import Stage
from app.ratelimit.limiter import ApiGatewayRateLimiter
from app.ratelimit.limits import RateLimitState, rate_limit_headers
from app.ratelimit.protocol import decision_reply
from app.routing.router import Route
from app.store import ScriptCall, StoreError

NO_ROUTE = "(none)"


class RateLimitStage(Stage):
    name = "ratelimit"

    def __init__(self, limiter: ApiGatewayRateLimiter) -> None:
        self.limiter = limiter
        self._identify = limiter.identifier.identify

    def admission_call(self, ex: Exchange, route: Route | None) -> ScriptCall | None:
        # Named already by the library call (handle_request), or by a credential (the auth stage).
        tier = ex.client_tier
        account = None
        if not ex.client_id:
            identity = self._identify(ex.headers, ex.client_addr)
            ex.client_id = identity.client_id
            tier = identity.tier
            account = identity.account
        plan = self.limiter.plan(ex.client_id, tier, route, account)
        ex.ratelimit_plan = plan
        return plan.call

    async def admit(self, ex: Exchange, route: Route | None, store_reply: object) -> Reply | None:
        if store_reply is None:  # no limit applies to this client: no call was made
            return None
        if isinstance(store_reply, StoreError):
            policy = (route.spec.failure_policy if route is not None else None) or self.limiter.config.failure_policy
            fail_open = policy == "fail_open"
            self.limiter.degraded(store_reply, fail_open)
            ex.ratelimit_outcome = "degraded"
            if fail_open:
                return None
            return error_reply(503, "rate limiter unavailable", [(b"retry-after", b"1")], retry_after=1)
        decision = decision_reply(store_reply)  # type: ignore[arg-type]
        if decision.allowed == 1:
            # Admitted (the common case): the headers straight from the reply, no RateLimitState.
            ex.response_headers += rate_limit_headers(decision.limit, decision.remaining, decision.reset_ms)
            ex.ratelimit_outcome = "allowed"
            return None
        plan = ex.ratelimit_plan
        assert plan is not None  # admission_call made it, or there would be no reply
        state = RateLimitState.of(decision, plan.names)
        ex.response_headers.extend(state.headers())
        if state.allowed:
            ex.ratelimit_outcome = "allowed"
            return None
        ex.ratelimit_outcome = "limited"
        RATE_LIMITED.labels(route.key if route is not None else NO_ROUTE).inc()
        seconds = state.retry_after
        return error_reply(429, "rate limit exceeded", [(b"retry-after", str(seconds).encode())],
                           retry_after=seconds, limit=state.limit, client_id=ex.client_id)
