"""Authentication in the request pipeline: who the client is, decided before the admission round
trip, since what the other stages ask the store depends on it (the rate limit counts the consumer,
with its tier; the cache keeps private answers per consumer).

``prepare`` checks the route's methods in order (any one admits) and the roles, then tells the
backend who the consumer is in ``X-Consumer-ID`` / ``X-Consumer-Roles`` (the client's copies
removed first) and takes the credential out of the request. A request that fails is not answered
at once: it still goes through the admission round trip, charged to its address's rate limit, with
its failure counted (app/auth/abuse), and ``admit`` then answers 401, or 429 when the address has
failed too often. A consumer without the route's roles gets 403 the same way, charged to itself.
An address that is cooling off gets 429 at once, valid credentials or not.

Each authentication is counted in ``apigw_auth_total`` by route, method and outcome: ``ok``,
``missing`` (no credential), ``invalid`` (a credential that admits no one) or ``forbidden`` (a
consumer without the route's roles). An address turned away while cooling off was not authenticated
and is not counted there (its 429 is in ``apigw_requests_total``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from app.auth.abuse.handler import Cooling
from app.auth.acl.handler import RoleRule
from app.auth.consumer import Consumer, Verdict
from app.auth.jwt_auth.handler import JwtAuth
from app.auth.jwt_auth.keys import JwksSource
from app.auth.key_auth.handler import KeyAuth
from app.auth.rules import Authenticator, RouteAuth
from app.auth.schema import AuthSection, AuthSpec, route_auth
from app.observability.metrics import AUTH_OUTCOMES
from app.pipeline.exchange import Exchange, Reply, error_reply
from app.pipeline.stage import Stage
from app.ratelimit.identity import ProxyTrust
from app.ratelimit.limiter import ApiGatewayManager
from app.store import ScriptCall, Store

if TYPE_CHECKING:
    from app.routing.router import Route

log = logging.getLogger("apigw.auth")

# The method label's values: any other method token (a route may take any) is "other", so a client
# cannot make series without bound.
_METHOD_LABELS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_count = AUTH_OUTCOMES.cell


def _counted(route: Route, method: str, outcome: str) -> None:
    _count(route.key, method if method in _METHOD_LABELS else "other", outcome)[0] += 1.0


_KEY_SET_FIELDS = {"jwks_url", "jwks_file", "jwks_refetch_interval", "jwks_max_age", "jwks_timeout", "algorithms"}


def too_many_failures(seconds: float) -> Reply:
    wait = max(1, int(seconds + 0.999))
    return error_reply(429, "too many failed authentications", [(b"retry-after", str(wait).encode())],
                       retry_after=wait)


class AuthStage(Stage):
    name = "auth"

    def __init__(self, section: AuthSection, store: Store, keys: ApiGatewayManager, trust: ProxyTrust) -> None:
        self.section = section
        self.keys = keys
        self.trust = trust
        self.cooling = Cooling(store, section.abuse) if section.abuse.enabled else None
        # One of each per distinct setting, shared by the routes that use it (one JWKS per source).
        self._key_auths: dict[str, KeyAuth] = {}
        self._jwt_auths: dict[str, JwtAuth] = {}
        self._sources: dict[str, JwksSource] = {}
        keys.on_change(self._keys_changed)
        # (route, method) -> its "ok" cell of apigw_auth_total: the admitted request's one dict lookup.
        self._ok_cells: dict[tuple[Route, str], list[float]] = {}

    def _ok_cell(self, route: Route, method: str) -> list[float]:
        if len(self._ok_cells) >= 4096:  # routes replaced through the admin API leave theirs behind
            self._ok_cells.clear()
        cell = self._ok_cells[(route, method)] = _count(
            route.key, method if method in _METHOD_LABELS else "other", "ok")
        return cell

    def _keys_changed(self) -> None:
        for auth in self._key_auths.values():
            auth.forget()

    async def start(self, routes: Iterable[Route]) -> None:
        """Listen for cooling periods, and read the key sets of ``routes`` before the first request
        (a route added later reads its own on its first token)."""
        for route in routes:
            if self.applies_to(route):
                self.rules_for(route)
        if self.cooling is not None:
            self.cooling.start()
        for source in self._sources.values():
            await source.start()

    async def close(self) -> None:
        if self.cooling is not None:
            self.cooling.close()
        for source in self._sources.values():
            await source.close()

    # -- compiling a route ----------------------------------------------------------------------

    def applies_to(self, route: Route | None) -> bool:
        return route is not None and route_auth(self.section, route.spec.auth).authenticates

    def rules_for(self, route: Route) -> RouteAuth:
        rules = route.compiled.auth
        if rules is None:
            spec = route_auth(self.section, route.spec.auth)
            rules = route.compiled.auth = RouteAuth.of(
                self._authenticators(spec), RoleRule(spec.allow_roles, spec.deny_roles), spec.forward_credentials,
                spec.consumer_headers.id, spec.consumer_headers.roles)
        return rules

    def _authenticators(self, spec: AuthSpec) -> tuple[Authenticator, ...]:
        made: list[Authenticator] = []
        for method in spec.methods:
            if method == "api_key":
                name = spec.api_key.model_dump_json()
                if name not in self._key_auths:
                    self._key_auths[name] = KeyAuth(spec.api_key, self.keys.api_key_owner)
                made.append(self._key_auths[name])
            elif spec.jwt is not None:
                name = spec.jwt.model_dump_json()
                if name not in self._jwt_auths:
                    # Routes that differ in claims only (another audience) share the key set.
                    where = spec.jwt.model_dump_json(include=_KEY_SET_FIELDS)
                    source = self._sources.get(where)
                    if source is None:
                        source = self._sources[where] = JwksSource(spec.jwt)
                    self._jwt_auths[name] = JwtAuth(spec.jwt, source)
                made.append(self._jwt_auths[name])
        return tuple(made)

    # -- a request ------------------------------------------------------------------------------

    async def prepare(self, ex: Exchange, route: Route | None) -> Reply | None:
        assert route is not None  # applies_to: routes with methods only
        rules = route.compiled.auth or self.rules_for(route)
        cooling = self.cooling
        address = ""
        if cooling is not None:
            address = self.trust.address_of(ex.headers, ex.client_addr)
            left = cooling.seconds_left(address)
            if left:
                return too_many_failures(left)
        consumer: Consumer | None = None
        presented = False
        for method in rules.methods:
            verdict = method.authenticate(ex)
            if verdict is Verdict.UNKNOWN_KEY:
                assert isinstance(method, JwtAuth)
                verdict = await method.authenticate_with_new_keys(ex)
            if type(verdict) is Consumer:
                consumer = verdict
                break
            if verdict is Verdict.INVALID:
                presented = True
        if consumer is None:
            # Charged to the address it comes from, whatever client id it claims.
            ex.client_id = "ip:" + (address or self.trust.address_of(ex.headers, ex.client_addr))
            ex.refusal = RouteAuth.answer(rules.invalid if presented else rules.missing)
            _counted(route, ex.method, "invalid" if presented else "missing")
            if presented and cooling is not None:
                ex.auth_failed_from = address
            return None
        ex.consumer = consumer
        ex.client_id = consumer.id
        ex.client_tier = consumer.tier
        if rules.roles.restricts and not rules.roles.permits(consumer.roles):
            ex.refusal = RouteAuth.answer(rules.forbidden)
            _counted(route, ex.method, "forbidden")
            return None
        ok = self._ok_cells.get((route, ex.method))
        if ok is None:
            ok = self._ok_cell(route, ex.method)
        ok[0] += 1.0
        rules.admit(ex, consumer)
        return None

    def admission_call(self, ex: Exchange, route: Route | None) -> ScriptCall | None:
        address = ex.auth_failed_from
        if address is None or self.cooling is None:
            return None
        return self.cooling.failure_call(address)

    async def admit(self, ex: Exchange, route: Route | None, store_reply: Any) -> Reply | None:
        refusal = ex.refusal
        if refusal is None:
            return None
        address = ex.auth_failed_from
        if address is not None and self.cooling is not None and type(store_reply) is list:
            count = self.cooling.counted(address, store_reply)
            if count.cooling:
                log.warning("auth: %s refused for %.0f s after %d offence(s)", address,
                            count.retry_after_ms / 1000, count.strikes)
                return too_many_failures(count.retry_after_ms / 1000)
        return refusal
