"""The circuit check in the request pipeline (after rate limit and cache lookup).

A route has one breaker, named by its key; a route with several targets has one per target
(``<route key> @ <url>``), and the load balancer skips targets whose circuit refuses. The check
reads replica memory; only a circuit due for a probe costs a store call. The outcome (a failure, or
a success that changes something) joins the cache store's write in the pipeline's second round trip.

A breaker made by a request (the route's first, or its first since its targets changed) has not
heard the fleet yet: another replica may have opened it. Its state read travels in that request's
admission batch (``admission_call``), so it is known before its first admission at no extra round
trip; once every breaker of the route has learned it, the route's plan drops the stage's
``admission_call`` (``StagePlan.settled``) and its requests pay nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.breaker.breaker import ApiCircuitBreaker, CircuitBreakerOpenError, Ticket
from app.breaker.fallback import open_circuit_reply
from app.breaker.manager import CircuitBreakerManager
from app.breaker.model import Outcome
from app.config import CircuitBreakerSection
from app.pipeline.exchange import Exchange, Reply
from app.pipeline.stage import BEFORE_ANSWER, EITHER, CallGroup, Stage
from app.routing.router import Route
from app.store import ScriptCall


@dataclass(slots=True)
class RouteBreakers:
    single: ApiCircuitBreaker | None
    by_url: dict[str, ApiCircuitBreaker]
    # The state reads of every breaker of the route (the single one's, else a CallGroup of the
    # targets' in by_url's order) while one of them has not learned the fleet's state; then None.
    first_read: ScriptCall | CallGroup | None = None


def target_breaker_name(route_key: str, url: str) -> str:
    return f"{route_key} @ {url}"


class CircuitBreakerStage(Stage):
    name = "circuit_breaker"

    def __init__(self, manager: CircuitBreakerManager, section: CircuitBreakerSection) -> None:
        self.manager = manager
        self.section = section

    def breakers_for(self, route: Route) -> RouteBreakers:
        found: RouteBreakers | None = route.compiled.breakers
        if found is None:
            config = route.spec.circuit_breaker or self.section.default
            targets = route.balancer.targets
            if len(targets) == 1:
                found = RouteBreakers(self.manager.get_circuit_breaker(route.key, config), {})
            else:
                found = RouteBreakers(None, {t.url: self.manager.get_circuit_breaker(
                    target_breaker_name(route.key, t.url), config) for t in targets})
            if found.single is not None:
                found.first_read = None if found.single.known else found.single.state_call()
            elif not all(b.known for b in found.by_url.values()):
                found.first_read = CallGroup(b.state_call() for b in found.by_url.values())
            route.compiled.breakers = found
        return found

    @staticmethod
    def _learn_first(breakers: RouteBreakers, store_reply: Any) -> None:
        """The replies to ``first_read``; a StoreError leaves that breaker unknown (asked again by
        the next request, deciding on its memory meanwhile)."""
        if breakers.single is not None:
            pairs = [(breakers.single, store_reply)]
        elif len(store_reply) == len(breakers.by_url):
            pairs = list(zip(breakers.by_url.values(), store_reply, strict=True))
        else:
            return  # the route's targets changed since the call was made: the next request asks
        for breaker, reply in pairs:
            if not isinstance(reply, BaseException) and not breaker.local_only:
                breaker.learn_state(reply, force=False)
        if all(breaker.known for breaker, _ in pairs):
            breakers.first_read = None

    def every_breaker(self, routes: Iterable[Route]) -> dict[str, ApiCircuitBreaker]:
        """Every breaker by name, those of ``routes`` made now if no request has used them yet."""
        for route in routes:
            self.breakers_for(route)
        return self.manager.breakers

    def applies_to(self, route: Route | None) -> bool:
        return route is not None and self.section.enabled

    def admission_call(self, ex: Exchange, route: Route | None) -> ScriptCall | CallGroup | None:
        if route is None:
            return None
        compiled = route.compiled
        breakers: RouteBreakers = compiled.breakers or self.breakers_for(route)
        if breakers.first_read is None:
            # Every breaker of the route knows the fleet's state: its later requests ask nothing.
            compiled.stages = compiled.stages.settled(self)
        return breakers.first_read

    async def admit(self, ex: Exchange, route: Route | None, store_reply: Any) -> Reply | None:
        if route is None or not self.section.enabled:
            return None
        breakers: RouteBreakers = route.compiled.breakers or self.breakers_for(route)
        if store_reply is not None:
            self._learn_first(breakers, store_reply)
        single = breakers.single
        if single is not None:
            # A CLOSED circuit admits from memory, without a coroutine.
            ticket = single.admit_closed()
            if ticket is None:
                try:
                    ticket = await single.admit(self._lease(route))
                except CircuitBreakerOpenError as refused:
                    return self._refused(route, refused)
            self._hold(ex, single, ticket)
            return None
        excluded = {url for url, b in breakers.by_url.items() if not b.admits_locally()}
        refused: CircuitBreakerOpenError | None = None
        while True:
            target = route.balancer.next_target(exclude=excluded)
            if target is None:
                break
            breaker = breakers.by_url[target.url]
            try:
                ticket = breaker.admit_closed() or await breaker.admit(self._lease(route))
            except CircuitBreakerOpenError as error:
                if refused is None or error.retry_after < refused.retry_after:
                    refused = error
                excluded.add(target.url)
                continue
            ex.target = target
            self._hold(ex, breaker, ticket)
            return None
        if refused is None and excluded:
            # Every healthy target's circuit is open: say when the first may be tried again.
            first = min((breakers.by_url[url] for url in excluded), key=lambda b: b.retry_after())
            refused = CircuitBreakerOpenError(first.name, first.state, first.retry_after())
        return self._refused(route, refused) if refused is not None else None

    @staticmethod
    def _lease(route: Route) -> float:
        # A probe that never reports holds its slot for as long as the call could take.
        return route.spec.timeout.connect + route.spec.timeout.read + 1.0

    @staticmethod
    def _hold(ex: Exchange, breaker: ApiCircuitBreaker, ticket: Ticket) -> None:
        ex.circuit = breaker
        ex.circuit_ticket = ticket
        if ticket.probe:
            ex.no_retry = True  # a probe is one call, not one plus retries
        else:
            ex.retry_guard = breaker.retry_guard

    def _refused(self, route: Route, refused: CircuitBreakerOpenError) -> Reply:
        fallback = route.spec.fallback or self.manager.fallback_service.find(route.key, route.path)
        return open_circuit_reply(refused.name, refused.state.value, refused.retry_after, fallback)

    def completion_call(self, ex: Exchange, route: Route, reply: Reply) -> ScriptCall | None:
        breaker = ex.circuit
        ticket = ex.circuit_ticket
        if breaker is None or ticket is None:
            return None
        backend = ex.backend
        if backend is None:
            call = breaker.outcome_call(ticket, Outcome.NONE, None)
        else:
            outcome = Outcome.FAILURE if backend.failed else Outcome.SUCCESS
            call = breaker.outcome_call(ticket, outcome, backend.seconds)
        ex.circuit_call = call
        return call

    def completion_order(self, ex: Exchange, call: ScriptCall) -> int:
        # A failure may open the circuit and a probe's outcome closes or reopens it: the client's
        # next request must find that done. A plain success changes nothing a request waits on.
        ticket = ex.circuit_ticket
        backend = ex.backend
        if ticket is None or ticket.probe or backend is None or backend.failed:
            return BEFORE_ANSWER
        return EITHER

    async def completed(self, ex: Exchange, route: Route, reply: Reply, store_reply: Any) -> None:
        breaker = ex.circuit
        call = ex.circuit_call
        if breaker is not None and call is not None:
            await breaker.outcome_reply(call, store_reply)
