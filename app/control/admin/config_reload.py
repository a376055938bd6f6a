"""``POST /_gateway/config/reload``: read the config file again and apply it, as SIGHUP does.

A write token's call. 200 with what was applied (and the changed settings that need a restart,
listed as not applied); 400 naming each bad field when the file is refused, the running config
left as it was; 404 when the gateway's config came from no file (a library caller's, the demo's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse

from app.control.audit import Audited
from app.reload import ReloadReport

Reload = Callable[[str], Awaitable[ReloadReport]]


def build_router(reload: Reload | None) -> APIRouter:
    router = APIRouter(prefix="/_gateway/config", tags=["config"])

    @router.post("/reload", responses={400: {"description": "The file was refused: each bad field named"},
                                       404: {"description": "No config file to read again"}})
    async def reload_config(change: Audited) -> JSONResponse:
        """Read the config file the gateway was started with and apply it to every part at once."""
        if reload is None:
            raise HTTPException(404, "this gateway was not started from a config file it can read again")
        report = await reload("admin API")
        change.describe("config.reload", report.source)
        change.before = {"version": report.version - 1 if report.applied else report.version}
        change.after = report.document()
        return JSONResponse(report.document(), status_code=200 if report.applied else 400)

    return router
