"""The audit log of the admin API (``app.control.audit``): its latest records, newest first. A read
token may list them; the records show who changed what, never a token or an API key."""

from __future__ import annotations

from fastapi import APIRouter, Query

from app.control.audit import AdminAudit, AuditList


def build_router(audit: AdminAudit) -> APIRouter:
    router = APIRouter(prefix="/_gateway", tags=["audit"])

    @router.get("/audit", response_model=AuditList)
    async def list_audit(limit: int = Query(50, ge=1, le=1000, description="how many records, newest first")) \
            -> AuditList:
        """The latest changes made through the admin API (fleet-wide, kept across restarts on Redis)."""
        return AuditList(records=await audit.latest(limit))

    return router
