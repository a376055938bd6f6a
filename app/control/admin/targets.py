"""Targets and their health, as this replica's load balancers see them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from app.routing.router import ApiGatewayRouter


class TargetUse(BaseModel):
    route: str
    weight: int
    healthy: bool  # False: the route's balancer skips it (health checks, shared with the fleet)


class TargetView(BaseModel):
    url: str
    healthy: bool  # healthy for every route that uses it
    routes: list[TargetUse]


def build_router(routes: ApiGatewayRouter[Any]) -> APIRouter:
    router = APIRouter(prefix="/_gateway/targets", tags=["targets"])

    @router.get("", response_model=list[TargetView])
    async def list_targets() -> list[TargetView]:
        """Every backend the routes send to, with its health per route."""
        by_url: dict[str, list[TargetUse]] = {}
        for route in routes.routes:
            for target in route.balancer.targets:
                by_url.setdefault(target.url, []).append(
                    TargetUse(route=route.key, weight=target.weight, healthy=target.healthy))
        return [TargetView(url=url, healthy=all(u.healthy for u in uses), routes=uses)
                for url, uses in sorted(by_url.items())]

    return router
