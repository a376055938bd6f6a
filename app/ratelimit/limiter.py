"""The seed's rate limiter: limits per client, counted once for the whole fleet.

``ApiGatewayRateLimiter`` is the library (``await limiter.is_allowed(client_id, path)``) and what
the pipeline's stage calls. Every decision is one call of ``lua/ratelimit.lua``, which checks and
charges all of a request's limits (rolling windows per second/minute/hour/day, the burst token
bucket, the route's own limits) at once, all or nothing, on Redis's clock.

``ApiGatewayManager`` decides which limits apply to whom: the config file's default, tiers and
clients, API keys, and the client configs set at runtime, which live in Redis and reach every
replica through pub/sub (each replica mirrors them in memory, so the request path never reads them).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from app.ratelimit.identity import ClientIdentifier, Identity, KeyOwner, ProxyTrust, hash_api_key
from app.config import ClientSpec, RateLimiterSection, RateLimitSpec
from app.observability.metrics import STORE_ERRORS
from app.ratelimit.limits import LIMIT_FIELDS, WINDOWS, RateLimitState, limits_of
from app.ratelimit.protocol import (Limit, client_prefix, decision_reply, every_key, own_suffix, ratelimit_call,
                                    route_suffix, sub_account_prefix, usage_reply)
from app.routing.router import Route
from app.store import MemoryStore, ScriptCall, Store, StoreError

log = logging.getLogger("apigw.ratelimit")

# The seed's names: RateLimitConfig is the config file's spec (same fields, same validation).
RateLimitConfig = RateLimitSpec

__all__ = ["ApiGatewayManager", "ApiGatewayRateLimiter", "RateLimitConfig", "RateLimitState"]

# (client, tier, route) plans kept per replica; clients seen by IP can be many, so it is bounded.
_MAX_PLANS = 50_000
_LOG_EVERY = 10.0


def _merge(base: RateLimitSpec, override: RateLimitSpec) -> RateLimitSpec:
    """``base`` with the limits ``override`` sets explicitly (an unset field inherits)."""
    changed = {f: getattr(override, f) for f in override.model_fields_set if f in LIMIT_FIELDS}
    if not changed:
        return base
    return RateLimitSpec.model_construct(**{**{f: getattr(base, f) for f in LIMIT_FIELDS}, **changed})


def _as_client_spec(config: RateLimitSpec | dict[str, Any]) -> ClientSpec:
    if isinstance(config, ClientSpec):
        return config
    if isinstance(config, RateLimitSpec):
        data = config.model_dump(include=config.model_fields_set)
        return ClientSpec.model_validate(data)
    return ClientSpec.model_validate(config)


# A spec's limits for the script: their names, key suffixes and limits (ApiGatewayRateLimiter._template).
Template = tuple[tuple[str, ...], tuple[str, ...], tuple[Limit, ...]]


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a request of one client on one route needs, built once: the script's call, and
    its limits' names, keys and limits (in the same order) for other calls of the same limits."""

    call: ScriptCall | None
    names: tuple[str, ...]
    keys: tuple[str, ...]
    limits: tuple[Limit, ...]

    def peek_call(self) -> ScriptCall:
        """A call that reads the same limits without charging them (reply: ``usage_reply``)."""
        return ratelimit_call(self.keys, self.limits, cost=0)


class ApiGatewayManager:
    """Which limits apply to a client: runtime config > ``clients:`` entry > the API key's tier >
    ``default``; a client or tier entry sets some limits and inherits the rest (client -> its tier ->
    default). Runtime client configs and API keys live in Redis, mirrored here."""

    def __init__(self, store: Store, section: RateLimiterSection) -> None:
        self.store = store
        self.section = section
        self.clients_key = store.key("rlcfg", "clients")
        self.api_keys_key = store.key("rlcfg", "apikeys")
        self.channel = store.channel("ratelimit")
        self._runtime: dict[str, ClientSpec] = {}
        self._api_keys: dict[str, KeyOwner] = {
            hash_api_key(k.key): KeyOwner(k.client_id, k.tier, tuple(k.roles)) for k in section.api_keys}
        self._runtime_keys: dict[str, KeyOwner] = {}
        self._tiers = {name: _merge(section.default, spec) for name, spec in section.tiers.items()}
        self._listeners: list[Callable[[], None]] = []
        self._started = False
        # The first start's work, which every caller that comes while it runs waits for.
        self._starting: asyncio.Future[None] | None = None

    # -- sync with the fleet ---------------------------------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    async def start(self) -> None:
        """Subscribe and load the runtime configs; a caller that comes while the first load runs
        waits for it, so that no decision is made on limits about to be replaced."""
        if self._started:
            return
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        # shield: a caller cancelled while it waits does not cancel the load the others wait for.
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        self.store.subscribe(self.channel, self._on_message)
        self.store.on_reconnect(self.reload)
        try:
            await self.reload()
        except StoreError as error:  # unreachable now: the reconnect handler reloads later
            log.warning("runtime rate-limit configs not loaded yet: %s", error)
        finally:
            self._started = True

    def close(self) -> None:
        self.store.unsubscribe(self.channel, self._on_message)
        self.store.forget_reconnect(self.reload)

    async def reload(self) -> None:
        """Re-read every runtime client config and API key (at start, and after pub/sub broke)."""
        clients = await self.store.hgetall(self.clients_key)
        keys = await self.store.hgetall(self.api_keys_key)
        self._runtime = {k.decode(): ClientSpec.model_validate(orjson.loads(v)) for k, v in clients.items()}
        self._runtime_keys = {k.decode(): self._key_entry(orjson.loads(v)) for k, v in keys.items()}
        self._changed()

    @staticmethod
    def _key_entry(data: dict[str, Any]) -> KeyOwner:
        return KeyOwner(str(data["client_id"]), data.get("tier"), tuple(data.get("roles") or ()))

    def _on_message(self, message: bytes) -> None:
        event = orjson.loads(message)
        if event["kind"] == "client":
            self._apply_client(event["id"], event.get("config"))
        elif event["kind"] == "api_key":
            self._apply_key(event["hash"], event.get("entry"))

    def _apply_client(self, client_id: str, config: dict[str, Any] | None) -> None:
        if config is None:
            self._runtime.pop(client_id, None)
        else:
            self._runtime[client_id] = ClientSpec.model_validate(config)
        self._changed()

    def _apply_key(self, digest: str, entry: dict[str, Any] | None) -> None:
        if entry is None:
            self._runtime_keys.pop(digest, None)
        else:
            self._runtime_keys[digest] = self._key_entry(entry)
        self._changed()

    async def set_client_config(self, client_id: str, config: RateLimitSpec | dict[str, Any] | None) -> None:
        """Set (or with None remove) a client's limits for the whole fleet: kept in Redis, announced
        on pub/sub; this replica applies it at once."""
        if config is None:
            await self.store.hdel(self.clients_key, client_id)
            self._apply_client(client_id, None)
            await self.store.publish(self.channel, orjson.dumps({"kind": "client", "id": client_id}))
            return
        spec = _as_client_spec(config)
        if spec.tier is not None and spec.tier not in self._tiers:
            raise ValueError(f"unknown tier {spec.tier!r}")
        data = spec.model_dump(include=spec.model_fields_set)
        await self.store.hset(self.clients_key, {client_id: orjson.dumps(data)})
        self._apply_client(client_id, data)
        await self.store.publish(self.channel, orjson.dumps({"kind": "client", "id": client_id, "config": data}))

    async def add_api_key(self, key: str, client_id: str, tier: str | None = None,
                          roles: Iterable[str] = ()) -> str:
        """Register ``key`` for ``client_id``; the store keeps only its sha256. Returns the digest."""
        if len(key) < 16:
            raise ValueError("an API key needs at least 16 characters")
        if tier is not None and tier not in self._tiers:
            raise ValueError(f"unknown tier {tier!r}")
        digest = hash_api_key(key)
        entry = {"client_id": client_id, "tier": tier, "roles": sorted(set(roles))}
        await self.store.hset(self.api_keys_key, {digest: orjson.dumps(entry)})
        self._apply_key(digest, entry)
        await self.store.publish(self.channel, orjson.dumps({"kind": "api_key", "hash": digest, "entry": entry}))
        return digest

    async def create_api_key(self, client_id: str, tier: str | None = None, roles: Iterable[str] = ()) -> str:
        """A new random key for ``client_id``: returned once, never stored in clear."""
        key = "gw_" + secrets.token_urlsafe(32)
        await self.add_api_key(key, client_id, tier, roles)
        return key

    async def revoke_api_key(self, key: str | None = None, digest: str | None = None) -> bool:
        digest = digest or hash_api_key(key or "")
        removed = await self.store.hdel(self.api_keys_key, digest)
        self._apply_key(digest, None)
        await self.store.publish(self.channel, orjson.dumps({"kind": "api_key", "hash": digest}))
        return removed > 0

    # -- resolution ------------------------------------------------------------------------------

    def api_key_owner(self, digest: str) -> KeyOwner | None:
        return self._runtime_keys.get(digest) or self._api_keys.get(digest)

    def has_own_limits(self, client_id: str) -> bool:
        """Whether ``client_id`` has an entry of its own (runtime or ``clients:``), else its limits
        are its tier's."""
        return client_id in self._runtime or client_id in self.section.clients

    def spec_for(self, client_id: str, tier: str | None = None) -> RateLimitSpec:
        entry = self._runtime.get(client_id)
        if entry is None:
            entry = self.section.clients.get(client_id)
        if entry is not None and entry.tier is not None:
            tier = entry.tier
        base = self.tier_spec(tier)
        return _merge(base, entry) if entry is not None else base

    def tier_spec(self, tier: str | None) -> RateLimitSpec:
        """The limits of a client without an entry of its own."""
        return self._tiers.get(tier, self.section.default) if tier else self.section.default

    # Read-only views for the admin API and ``python -m app state``.
    @property
    def tiers(self) -> dict[str, RateLimitSpec]:
        """Each tier's limits, with what it leaves unset taken from ``default``."""
        return dict(self._tiers)

    @property
    def runtime_clients(self) -> dict[str, ClientSpec]:
        """Client configs set at runtime (set_client_config), as kept in Redis."""
        return dict(self._runtime)

    def api_key_entries(self) -> dict[str, tuple[KeyOwner, str]]:
        """sha256 of each key -> (its owner, "config" or "api"); the keys themselves are not kept."""
        entries = {digest: (owner, "config") for digest, owner in self._api_keys.items()}
        entries.update({digest: (owner, "api") for digest, owner in self._runtime_keys.items()})
        return entries

    def client_config(self, client_id: str) -> dict[str, Any]:
        """The limits in force for ``client_id`` (as the admin API and the status page show them)."""
        spec = self.spec_for(client_id)
        return {f: getattr(spec, f) for f in LIMIT_FIELDS}


class ApiGatewayRateLimiter:
    """The seed's limiter. Without a store it runs on the memory store (one process)."""

    def __init__(self, store: Store | None = None, config: RateLimiterSection | None = None,
                 api_key_header: str | None = None) -> None:
        """``api_key_header``: where clients send their API key (``auth.api_key.header``), read to
        identify them on every route; None: ``X-API-Key``."""
        self.config = config or RateLimiterSection()
        self.store = store or MemoryStore()
        self.manager = ApiGatewayManager(self.store, self.config)
        self.identifier = ClientIdentifier(ProxyTrust(self.config.trusted_proxies), self.manager.api_key_owner,
                                           ProxyTrust(self.config.client_id_trusted_from), api_key_header)
        self._plans: dict[tuple[str, str | None, Route | None, str | None], Plan] = {}
        # (tier, route) -> what _template makes of the tier's limits (clients without limits of their own).
        self._templates: dict[tuple[str | None, Route | None], Template] = {}
        self._route_keys: set[str] = set()  # routes with limits of their own (for reset_client)
        self.manager.on_change(self._plans.clear)
        self.manager.on_change(self._templates.clear)
        self._last_log = 0.0

    async def start(self) -> None:
        await self.manager.start()

    async def close(self) -> None:
        self.manager.close()

    # -- plans: what the request path reuses -----------------------------------------------------

    def plan(self, client_id: str, tier: str | None = None, route: Route | None = None,
             account: str | None = None) -> Plan:
        """The prebuilt script call for ``client_id`` on ``route``: the client's limits, then the
        route's own (a route without ``rate_limit`` shares the client's plan). Keyed by the Route
        object, so a changed route (a new object) gets a new plan. With ``account`` (``ip:<addr>``)
        the client is a sub-account of it: the call charges both, the account as it charges the
        address's own requests."""
        if route is not None and route.spec.rate_limit is None:
            route = None
        cache_key = (client_id, tier, route, account)
        plan = self._plans.get(cache_key)
        if plan is None:
            plan = self._build_plan(client_id, tier, route) if account is None else \
                self._sub_account_plan(client_id, tier, route, account)
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            self._plans[cache_key] = plan
        return plan

    def _sub_account_plan(self, client_id: str, tier: str | None, route: Route | None, account: str) -> Plan:
        """The client's limits on keys under ``account``'s tag, then the account's own limits: one
        call, one slot, and a request admitted only when both have room."""
        own = self._build_plan(client_id, tier, route, sub_account_prefix(self.store, account, client_id))
        shared = self.plan(account, None, route)
        names = own.names + tuple(["ip:" + name for name in shared.names])
        keys, limits = own.keys + shared.keys, own.limits + shared.limits
        if not names:
            return Plan(None, (), (), ())
        return Plan(ratelimit_call(keys, limits), names, keys, limits)

    def _build_plan(self, client_id: str, tier: str | None, route: Route | None, prefix: str | None = None) -> Plan:
        if self.manager.has_own_limits(client_id):
            template = self._template(self.manager.spec_for(client_id, tier), route)
        else:
            # Most clients (every address) have the limits of their tier: what depends only on
            # (tier, route) is made once, and a new client costs its keys only.
            template = self._templates.get((tier, route))
            if template is None:
                template = self._templates[(tier, route)] = self._template(self.manager.tier_spec(tier), route)
        names, suffixes, limits = template
        if not names:
            return Plan(None, (), (), ())
        if prefix is None:
            prefix = client_prefix(self.store, client_id)
        keys = tuple([prefix + suffix for suffix in suffixes])
        return Plan(ratelimit_call(keys, limits), names, keys, limits)

    def _template(self, spec: RateLimitSpec, route: Route | None) -> Template:
        """A spec's (and the route's) limits as the script takes them: the limits' names, their
        key suffixes (after the client's prefix) and the limits."""
        limits: list[tuple[str, str, Limit]] = [(limit.name, own_suffix(limit.name), limit)
                                                for limit in limits_of(spec)]
        route_spec = route.spec.rate_limit if route is not None else None
        if route is not None and route_spec is not None:
            self._route_keys.add(route.key)
            # A route's spec adds only the limits it names (its unset fields are not limits).
            for limit in limits_of(route_spec, route_spec.model_fields_set):
                limits.append((f"route:{limit.name}", route_suffix(route.key, limit.name), limit))
        return tuple(n for n, _, _ in limits), tuple(k for _, k, _ in limits), tuple(x for _, _, x in limits)

    def identify(self, headers: list[tuple[bytes, bytes]], peer: str) -> Identity:
        return self.identifier.identify(headers, peer)

    # -- decisions -------------------------------------------------------------------------------

    def degraded(self, error: StoreError, fail_open: bool) -> RateLimitState:
        """The failure policy's answer when the store can't be asked; counted, logged now and then."""
        STORE_ERRORS.labels("ratelimit").inc()
        now = time.monotonic()
        if now - self._last_log > _LOG_EVERY:
            self._last_log = now
            log.warning("rate limits not enforced (%s): store unavailable: %s",
                        "failing open" if fail_open else "failing closed", error)
        return RateLimitState(allowed=fail_open, retry_after_ms=0 if fail_open else 1000, degraded=True)

    @property
    def fail_open(self) -> bool:
        return self.config.failure_policy == "fail_open"

    async def check(self, client_id: str, tier: str | None = None, *, now_us: int | None = None) -> RateLimitState:
        """Decide (and when admitted, count) one request of ``client_id``.

        ``now_us`` replays a time in tests only; the gateway never passes it, so Redis TIME decides."""
        await self.manager.start()
        plan = self.plan(client_id, tier)
        if plan.call is None:
            return RateLimitState(allowed=True)
        call = plan.call if now_us is None else ratelimit_call(plan.keys, plan.limits, now_us=now_us)
        try:
            reply = (await self.store.run(call))[0]
        except StoreError as error:
            return self.degraded(error, self.fail_open)
        return RateLimitState.of(decision_reply(reply), plan.names)

    # -- the seed's API --------------------------------------------------------------------------

    async def set_client_config(self, client_id: str, config: RateLimitSpec | dict[str, Any] | None) -> None:
        """The seed's call: ``client_id``'s limits from now on, on every replica."""
        await self.manager.start()
        await self.manager.set_client_config(client_id, config)

    async def is_allowed(self, client_id: str, endpoint: str = "") -> bool:
        """The seed's call: admit and count one request of ``client_id``. ``endpoint`` is accepted for
        the seed's signature; route limits apply in the gateway, where the route is known."""
        return (await self.check(client_id)).allowed

    async def get_client_stats(self, client_id: str) -> dict[str, int | None]:
        """The seed's shape, read from the shared state (the same on every replica):
        requests counted in the rolling minute and hour, and burst tokens left (without a burst
        bucket, what the minute window has left, as that is then the tightest bucket)."""
        await self.manager.start()
        plan = self.plan(client_id)
        if plan.call is None:
            return {"requests_this_minute": 0, "requests_this_hour": 0, "burst_tokens": None}
        usage = usage_reply((await self.store.run(plan.peek_call()))[0])
        used = dict(zip(plan.names, usage.used, strict=True))
        spec = self.manager.spec_for(client_id)
        if spec.burst_size is not None and "b" in used:
            tokens: int | None = spec.burst_size - used["b"]
        elif spec.requests_per_minute is not None:
            tokens = max(0, spec.requests_per_minute - used.get("m", 0))
        else:
            tokens = None
        return {"requests_this_minute": used.get("m", 0), "requests_this_hour": used.get("h", 0),
                "burst_tokens": tokens}

    async def reset_client(self, client_id: str, route_keys: Iterable[str] = ()) -> int:
        """Forget every counter of ``client_id`` (its own limits and its routes'), fleet-wide."""
        names = ["b", *(name for _, name, _, _ in WINDOWS)]
        return await self.store.delete(*every_key(self.store, client_id, names, {*self._route_keys, *route_keys}))
