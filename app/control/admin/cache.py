"""The cache's admin calls under ``/_gateway/cache``: fleet-wide stats and invalidation.

``build_router`` is mounted by the control plane (app/control/app.py) behind the admin API's guard
(``app.control.admin.auth``: a bearer token; with no ``admin.token`` configured the calls are refused).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.cache.manager import ApiCacheManager
from app.control.audit import Audited


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


def build_router(cache: ApiCacheManager) -> APIRouter:
    router = APIRouter(prefix="/_gateway/cache", tags=["cache"])

    @router.get("/stats", response_model=CacheStats)
    async def stats() -> dict[str, object]:
        """Hits, misses, hit rate and size for the whole fleet (the same from every replica)."""
        return await cache.get_stats()

    @router.post("/invalidate", response_model=Invalidated)
    async def invalidate(body: Invalidation, change: Audited) -> Invalidated:
        """Remove the matching entries; the next request for them misses on every replica."""
        change.describe("cache.invalidate", body.pattern)
        done = Invalidated(pattern=body.pattern, removed=await cache.invalidate(body.pattern))
        change.after = {"removed": done.removed}
        return done

    return router
