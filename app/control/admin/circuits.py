"""Circuit breakers through the admin API: their states, and opening, closing or resetting one by
hand for the whole fleet (a new generation in Redis, announced to every replica at once)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from app.breaker.breaker import ApiCircuitBreaker
from app.breaker.stage import CircuitBreakerStage
from app.control.audit import Audited, Change
from app.routing.router import ApiGatewayRouter


class CircuitView(BaseModel):
    name: str  # the route key, or "<route key> @ <target url>" for a route with several targets
    state: Literal["closed", "open", "half_open"]
    stats: dict[str, Any]  # this replica's counts, and what it knows of the shared state


class Opening(BaseModel):
    seconds: float | None = Field(default=None, gt=0, le=86400,
                                  description="how long it stays open (default: its recovery_timeout)")


def build_router(breakers: CircuitBreakerStage, routes: ApiGatewayRouter[Any]) -> APIRouter:
    router = APIRouter(prefix="/_gateway/circuits", tags=["circuits"])

    def every_breaker() -> dict[str, ApiCircuitBreaker]:
        return breakers.every_breaker(routes.routes)

    def view(breaker: ApiCircuitBreaker) -> CircuitView:
        stats = breaker.get_stats()
        return CircuitView(name=breaker.name, state=stats["state"], stats=stats)

    def find(name: str) -> ApiCircuitBreaker:
        breaker = every_breaker().get(name)
        if breaker is None:
            raise HTTPException(404, f"no circuit named {name!r}")
        return breaker

    async def forced(name: str, change: Change, state: Literal["open", "closed", "reset"],
                     seconds: float | None = None) -> CircuitView:
        change.describe({"open": "circuit.open", "closed": "circuit.close", "reset": "circuit.reset"}[state], name)
        breaker = find(name)
        change.before = view(breaker).model_dump(mode="json")
        await breaker.force(state, seconds)
        after = view(breaker)
        change.after = after.model_dump(mode="json")
        return after

    @router.get("", response_model=list[CircuitView])
    async def list_circuits() -> list[CircuitView]:
        """Every circuit and its state as this replica knows it (kept fresh by the fleet's events)."""
        return [view(b) for _, b in sorted(every_breaker().items())]

    @router.get("/{name:path}", response_model=CircuitView, responses={404: {"description": "no such circuit"}})
    async def get_circuit(name: str) -> CircuitView:
        return view(find(name))

    @router.post("/{name:path}/open", response_model=CircuitView, responses={404: {"description": "no such circuit"}})
    async def open_circuit(name: str, change: Audited, opening: Opening | None = None) -> CircuitView:
        """Open it for the fleet: requests get the fallback or 503 until it goes HALF_OPEN."""
        return await forced(name, change, "open", opening.seconds if opening is not None else None)

    @router.post("/{name:path}/close", response_model=CircuitView,
                 responses={404: {"description": "no such circuit"}})
    async def close_circuit(name: str, change: Audited) -> CircuitView:
        """Close it for the fleet: requests go to the backend again."""
        return await forced(name, change, "closed")

    @router.post("/{name:path}/reset", response_model=CircuitView,
                 responses={404: {"description": "no such circuit"}})
    async def reset_circuit(name: str, change: Audited) -> CircuitView:
        """Close it and clear its shared failure counts and rate window."""
        return await forced(name, change, "reset")

    return router
