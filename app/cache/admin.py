"""The cache's admin calls under ``/_gateway/cache``: fleet-wide stats and invalidation.

``build_router`` is mounted by the control plane behind the admin guard (a bearer token); with no
``admin.token`` configured, the calls are refused (403), never open.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from app.server import Gateway

_bearer = HTTPBearer(auto_error=False, scheme_name="adminToken")


class CacheStats(BaseModel):
    hits: int
    misses: int
    hit_rate: float
    size: int


class Invalidation(BaseModel):
    pattern: str = Field(min_length=1, max_length=2048,
                         description="a request path (that path and everything below it) or a glob")


class Invalidated(BaseModel):
    pattern: str
    removed: int


def bearer_guard(token: str | None) -> Callable[..., Awaitable[None]]:
    """Until the admin API's own guard takes over: the same rule (constant-time, off without a token)."""
    wanted = hashlib.sha256(token.encode()).digest() if token else None

    async def require_admin(credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> None:
        if wanted is None:
            raise HTTPException(403, "the admin API is off: set API_GATEWAY_ADMIN_TOKEN (admin.token)")
        presented = hashlib.sha256(credentials.credentials.encode()).digest() if credentials else b""
        if not hmac.compare_digest(presented, wanted):
            raise HTTPException(401, "missing or wrong admin token",
                                headers={"WWW-Authenticate": 'Bearer realm="apigw-admin"'})

    return require_admin


def build_router(gateway: Gateway) -> APIRouter:
    router = APIRouter(prefix="/_gateway/cache", tags=["cache"])
    cache = gateway.orchestrator.cache_manager

    @router.get("/stats", response_model=CacheStats)
    async def stats() -> dict[str, object]:
        """Hits, misses, hit rate and size for the whole fleet (the same from every replica)."""
        return await cache.get_stats()

    @router.post("/invalidate", response_model=Invalidated)
    async def invalidate(body: Invalidation) -> Invalidated:
        """Remove the matching entries; the next request for them misses on every replica."""
        return Invalidated(pattern=body.pattern, removed=await cache.invalidate(body.pattern))

    return router
