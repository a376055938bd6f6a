"""The circuit check in the request pipeline (after rate limit and cache lookup).

A route has one breaker, named by its key; a route with several targets has one per target
(``<route key> @ <url>``), and the load balancer skips targets whose circuit refuses. The check
reads replica memory; only a circuit due for a probe costs a store call. The outcome (a failure, or
a success that changes something) joins the cache store's write in the pipeline's second round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.breaker.breaker import ApiCircuitBreaker, CircuitBreakerOpenError, Ticket
from app.breaker.fallback import open_circuit_reply
from app.breaker.manager import CircuitBreakerManager
from app.breaker.model import Outcome
from app.config import CircuitBreakerSection
from app.exchange import Exchange, Reply
from app.pipeline import Stage
from app.retry import BackendCall
from app.router import Route
from app.store import ScriptCall


@dataclass(slots=True)
class RouteBreakers:
    single: ApiCircuitBreaker | None
    by_url: dict[str, ApiCircuitBreaker]


@dataclass(slots=True)
class Held:
    breaker: ApiCircuitBreaker
    ticket: Ticket
    call: ScriptCall | None = None


def target_breaker_name(route_key: str, url: str) -> str:
    return f"{route_key} @ {url}"


class CircuitBreakerStage(Stage):
    name = "circuit_breaker"

    def __init__(self, manager: CircuitBreakerManager, section: CircuitBreakerSection) -> None:
        self.manager = manager
        self.section = section

    def breakers_for(self, route: Route) -> RouteBreakers:
        found: RouteBreakers | None = route.compiled.get("breakers")
        if found is None:
            config = route.spec.circuit_breaker or self.section.default
            targets = route.balancer.targets
            if len(targets) == 1:
                found = RouteBreakers(self.manager.get_circuit_breaker(route.key, config), {})
            else:
                found = RouteBreakers(None, {t.url: self.manager.get_circuit_breaker(
                    target_breaker_name(route.key, t.url), config) for t in targets})
            route.compiled["breakers"] = found
        return found

    def applies_to(self, route: Route | None) -> bool:
        return route is not None and self.section.enabled

    async def admit(self, ex: Exchange, route: Route | None, store_reply: Any) -> Reply | None:
        if route is None or not self.section.enabled:
            return None
        breakers = self.breakers_for(route)
        # A probe that never reports holds its slot for as long as the call could take.
        lease = route.spec.timeout.connect + route.spec.timeout.read + 1.0
        if breakers.single is not None:
            try:
                ticket = await breakers.single.admit(lease)
            except CircuitBreakerOpenError as refused:
                return self._refused(route, refused)
            self._hold(ex, breakers.single, ticket)
            return None
        excluded = {url for url, b in breakers.by_url.items() if not b.admits_locally()}
        refused: CircuitBreakerOpenError | None = None
        while True:
            target = route.balancer.next_target(exclude=excluded)
            if target is None:
                break
            breaker = breakers.by_url[target.url]
            try:
                ticket = await breaker.admit(lease)
            except CircuitBreakerOpenError as error:
                if refused is None or error.retry_after < refused.retry_after:
                    refused = error
                excluded.add(target.url)
                continue
            ex.notes["target"] = target
            self._hold(ex, breaker, ticket)
            return None
        if refused is None and excluded:
            # Every healthy target's circuit is open: say when the first may be tried again.
            first = min((breakers.by_url[url] for url in excluded), key=lambda b: b.retry_after())
            refused = CircuitBreakerOpenError(first.name, first.state, first.retry_after())
        return self._refused(route, refused) if refused is not None else None

    def _hold(self, ex: Exchange, breaker: ApiCircuitBreaker, ticket: Ticket) -> None:
        ex.notes["circuit"] = Held(breaker, ticket)
        if ticket.probe:
            ex.notes["no_retry"] = True  # a probe is one call, not one plus retries
        else:
            ex.notes["retry_guard"] = breaker.admits_locally

    def _refused(self, route: Route, refused: CircuitBreakerOpenError) -> Reply:
        fallback = route.spec.fallback or self.manager.fallback_service.find(route.key, route.path)
        return open_circuit_reply(refused.name, refused.state.value, refused.retry_after, fallback)

    def completion_call(self, ex: Exchange, route: Route, reply: Reply) -> ScriptCall | None:
        held: Held | None = ex.notes.get("circuit")
        if held is None:
            return None
        backend: BackendCall | None = ex.notes.get("backend")
        if backend is None:
            outcome, seconds = Outcome.NONE, None
        else:
            outcome = Outcome.FAILURE if backend.failed else Outcome.SUCCESS
            seconds = backend.seconds
        held.call = held.breaker.outcome_call(held.ticket, outcome, seconds)
        return held.call

    async def completed(self, ex: Exchange, route: Route, reply: Reply, store_reply: Any) -> None:
        held: Held | None = ex.notes.get("circuit")
        if held is not None and held.call is not None:
            await held.breaker.outcome_reply(held.call, store_reply)
