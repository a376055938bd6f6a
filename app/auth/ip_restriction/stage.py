"""Address rules in the request pipeline: checked before anything else is asked of the store, so
a refused address costs no round trip (403)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.auth.ip_restriction.handler import IpRules
from app.auth.schema import AuthSection, route_auth
from app.pipeline.exchange import Exchange, Reply, error_reply
from app.pipeline.stage import Stage
from app.ratelimit.identity import ProxyTrust

if TYPE_CHECKING:
    from app.routing.router import Route


class IpRestrictionStage(Stage):
    name = "ip_restriction"

    def __init__(self, section: AuthSection, trust: ProxyTrust) -> None:
        self.section = section
        self.trust = trust
        # Requests that matched no route meet the top level's rules.
        self.unrouted = IpRules(section.ip_allow, section.ip_deny)

    def rules_for(self, route: Route | None) -> IpRules:
        if route is None:
            return self.unrouted
        rules = route.compiled.ip_rules
        if rules is None:
            own = route_auth(self.section, route.spec.auth)
            rules = route.compiled.ip_rules = IpRules(own.ip_allow, own.ip_deny)
        return rules

    def applies_to(self, route: Route | None) -> bool:
        if route is None:
            return self.unrouted.restricts
        own = route_auth(self.section, route.spec.auth)
        return bool(own.ip_allow or own.ip_deny)

    async def prepare(self, ex: Exchange, route: Route | None) -> Reply | None:
        if self.rules_for(route).admits(self.trust.address_of(ex.headers, ex.client_addr)):
            return None
        return error_reply(403, "address not allowed")
