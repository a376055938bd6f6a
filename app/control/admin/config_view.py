"""The effective config of this replica: the file, with the API's route changes on top."""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from app.config import GatewayConfig, RouterSection
from app.control.audit import Audited
from app.control.config_sync import ConfigSync, route_document

REDACTED = "<redacted>"
_URL_PASSWORD = re.compile(r"^([a-z+]+://[^:/@]*:)[^@]*@")
REPLICA = f"{socket.gethostname()}:{os.getpid()}"


class EffectiveConfig(BaseModel):
    version: int  # the config version this replica has applied (0: the file alone, never changed)
    replica: str  # host:pid, to tell replicas apart behind a load balancer
    changed_routes: list[str]  # keys of the routes the API changed, added or deleted
    config: dict[str, Any]


class ConfigReset(BaseModel):
    version: int


def redacted(config: GatewayConfig) -> dict[str, Any]:
    """The config as a document, without its secrets (the admin token, API keys)."""
    document = config.model_dump(mode="json")
    if document["redis"].get("url"):
        document["redis"]["url"] = _URL_PASSWORD.sub(rf"\1{REDACTED}@", document["redis"]["url"])
    if document["admin"].get("token"):
        document["admin"]["token"] = REDACTED
    for key in document["rate_limiter"].get("api_keys", []):
        key["key"] = REDACTED
    document["router"]["routes"] = [route_document(spec) for spec in config.router.routes]
    return document


def build_router(sync: ConfigSync) -> APIRouter:
    router = APIRouter(prefix="/_gateway/config", tags=["config"])

    @router.get("", response_model=EffectiveConfig)
    async def effective_config() -> EffectiveConfig:
        """What this replica runs now and the config version it has applied."""
        effective = sync.baseline_config.model_copy(
            update={"router": RouterSection(routes=sync.effective_routes())})
        return EffectiveConfig(version=sync.version, replica=REPLICA, changed_routes=sorted(sync.overrides),
                               config=redacted(effective))

    @router.delete("/overrides", response_model=ConfigReset)
    async def reset_overrides(change: Audited) -> ConfigReset:
        """Forget every route change made through the API, on every replica: the file's routes alone."""
        change.describe("config.reset_overrides", "routes")
        change.before = {key: None if override.spec is None else route_document(override.spec)
                         for key, override in sorted(sync.overrides.items())}
        version = ConfigReset(version=await sync.reset())
        change.after = {}
        return version

    return router
