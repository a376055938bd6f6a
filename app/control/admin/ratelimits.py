"""Rate limits through the admin API: tiers, client configs, API keys, a client's stats and reset.

Everything goes through ``ApiGatewayRateLimiter`` and its manager, which keep runtime configs and
API keys in Redis and tell every replica at once. An API key is shown once, when it is created;
afterwards only its sha256 exists anywhere.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from app.control.admin.validation import check_numbers
from app.control.audit import Audited
from app.ratelimit.identity import hash_api_key
from app.config import ClientSpec, RateLimitSpec
from app.ratelimit.limiter import ApiGatewayRateLimiter
from app.ratelimit.limits import LIMIT_FIELDS


class Limits(BaseModel):
    requests_per_second: int | None
    requests_per_minute: int | None
    requests_per_hour: int | None
    requests_per_day: int | None
    burst_size: int | None


class TierList(BaseModel):
    default: Limits
    tiers: dict[str, Limits]


class ClientStats(BaseModel):
    requests_this_minute: int
    requests_this_hour: int
    burst_tokens: int | None


class ClientView(BaseModel):
    client_id: str
    source: Literal["api", "config", "default"]  # where its limits come from
    config: dict[str, Any] | None  # what was set for it (a tier and/or limits), None for the default
    limits: Limits  # what is in force
    stats: ClientStats | None = None


class ClientList(BaseModel):
    clients: list[ClientView]


class Reset(BaseModel):
    client_id: str
    removed: int  # counters deleted


class NewApiKey(BaseModel):
    client_id: str = Field(min_length=1, max_length=200)
    tier: str | None = None
    roles: list[str] = Field(default=[], description="for routes with allow_roles / deny_roles")


class CreatedApiKey(BaseModel):
    key: str = Field(description="shown this once: only its sha256 is kept")
    hash: str
    client_id: str
    tier: str | None
    roles: list[str]


class ApiKeyView(BaseModel):
    hash: str
    client_id: str
    tier: str | None
    roles: list[str]
    source: Literal["config", "api"]


def _limits(spec: RateLimitSpec) -> Limits:
    return Limits(**{name: getattr(spec, name) for name in LIMIT_FIELDS})


def _unknown_tier(tier: str, field: tuple[str, ...]) -> RequestValidationError:
    return RequestValidationError([{"loc": field, "msg": f"unknown tier {tier!r}", "type": "value_error"}])


def build_router(limiter: ApiGatewayRateLimiter) -> APIRouter:
    router = APIRouter(prefix="/_gateway", tags=["rate limits"])
    manager = limiter.manager
    section = limiter.config

    def view(client_id: str, stats: dict[str, Any] | None = None) -> ClientView:
        runtime = manager.runtime_clients.get(client_id)
        configured = runtime or section.clients.get(client_id)
        source: Literal["api", "config", "default"] = \
            "api" if runtime is not None else "config" if configured is not None else "default"
        config = configured.model_dump(include=configured.model_fields_set) if configured is not None else None
        return ClientView(client_id=client_id, source=source, config=config,
                          limits=_limits(manager.spec_for(client_id)),
                          stats=ClientStats(**stats) if stats is not None else None)

    def settings(client_id: str) -> dict[str, Any]:
        """A client's limits as the audit log keeps them, before and after a change."""
        return view(client_id).model_dump(mode="json", include={"source", "config", "limits"})

    @router.get("/ratelimits/tiers", response_model=TierList)
    async def list_tiers() -> TierList:
        """The default limits and each tier's (from the config file; a tier inherits what it leaves unset)."""
        return TierList(default=_limits(section.default),
                        tiers={name: _limits(spec) for name, spec in sorted(manager.tiers.items())})

    @router.get("/clients", response_model=ClientList)
    async def list_clients() -> ClientList:
        """Clients with limits of their own: from the config file and set through the API."""
        ids = sorted({*section.clients, *manager.runtime_clients})
        return ClientList(clients=[view(client_id) for client_id in ids])

    @router.get("/clients/{client_id}", response_model=ClientView)
    async def get_client(client_id: str) -> ClientView:
        """A client's limits and its counters now (the same from every replica)."""
        return view(client_id, await limiter.get_client_stats(client_id))

    @router.put("/clients/{client_id}/limits", response_model=ClientView)
    async def set_client_limits(client_id: str, config: ClientSpec, change: Audited) -> ClientView:
        """Set a client's limits (a tier and/or limits; unset ones are inherited) for the whole fleet."""
        change.describe("client.limits.set", client_id)
        change.before = settings(client_id)
        if config.tier is not None and config.tier not in manager.tiers:
            raise _unknown_tier(config.tier, ("body", "tier"))
        check_numbers(config.model_dump())
        await limiter.set_client_config(client_id, config)
        change.after = settings(client_id)
        return view(client_id)

    @router.delete("/clients/{client_id}/limits", response_model=ClientView,
                   responses={404: {"description": "no limits were set through the API for this client"}})
    async def remove_client_limits(client_id: str, change: Audited) -> ClientView:
        """Forget the limits set through the API: the config file's (or the default) apply again."""
        change.describe("client.limits.remove", client_id)
        change.before = settings(client_id)
        if client_id not in manager.runtime_clients:
            raise HTTPException(404, f"no limits set through the API for client {client_id!r}")
        await limiter.set_client_config(client_id, None)
        change.after = settings(client_id)
        return view(client_id)

    @router.get("/clients/{client_id}/stats", response_model=ClientStats)
    async def client_stats(client_id: str) -> ClientStats:
        """The seed's get_client_stats: requests in the rolling minute and hour, burst tokens left."""
        return ClientStats(**await limiter.get_client_stats(client_id))

    @router.post("/clients/{client_id}/reset", response_model=Reset)
    async def reset_client(client_id: str, change: Audited) -> Reset:
        """Forget the client's counters, fleet-wide: its next request starts a fresh quota."""
        change.describe("client.reset", client_id)
        done = Reset(client_id=client_id, removed=await limiter.reset_client(client_id))
        change.after = {"removed": done.removed}
        return done

    @router.get("/api-keys", response_model=list[ApiKeyView])
    async def list_api_keys() -> list[ApiKeyView]:
        """Known API keys by their sha256 (the keys themselves are not kept)."""
        return [ApiKeyView(hash=digest, client_id=owner.client_id, tier=owner.tier, roles=list(owner.roles),
                           source=source)  # type: ignore[arg-type]
                for digest, (owner, source) in sorted(manager.api_key_entries().items())]

    @router.post("/api-keys", status_code=201, response_model=CreatedApiKey)
    async def create_api_key(new: NewApiKey, change: Audited) -> CreatedApiKey:
        """A new random key for a client (and tier). The answer is the only time the key is shown."""
        change.describe("api_key.create", new.client_id)
        if new.tier is not None and new.tier not in manager.tiers:
            raise _unknown_tier(new.tier, ("body", "tier"))
        key = await limiter.manager.create_api_key(new.client_id, new.tier, new.roles)
        created = CreatedApiKey(key=key, hash=hash_api_key(key), client_id=new.client_id, tier=new.tier,
                                roles=sorted(set(new.roles)))
        change.target = created.hash
        change.after = created.model_dump(mode="json", exclude={"key"})  # never the key itself
        return created

    @router.delete("/api-keys/{digest}", status_code=204, responses={404: {"description": "no such key"}})
    async def revoke_api_key(digest: str, change: Audited) -> None:
        """Revoke a key created through the API (by its sha256), on every replica."""
        entry = manager.api_key_entries().get(digest)
        change.describe("api_key.revoke", digest)
        change.before = None if entry is None else {
            "hash": digest, "client_id": entry[0].client_id, "tier": entry[0].tier, "roles": sorted(entry[0].roles)}
        if entry is None or entry[1] != "api":
            raise HTTPException(404, "no API key with this hash was created through the API")
        await limiter.manager.revoke_api_key(digest=digest)

    return router
