"""Address rules: ``ip_deny`` refuses the addresses in its networks; ``ip_allow``, when listed,
admits only those in its networks. Deny wins. The address is the client's as
``rate_limiter.trusted_proxies`` resolves it (app/ratelimit/identity.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

# Decisions kept per address (clients are many, but each sends many requests); cleared when full.
_MAX_KNOWN = 10_000


def _networks(cidrs: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


class IpRules:
    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow = _networks(allow)
        self.deny = _networks(deny)
        self._known: dict[str, bool] = {}

    @property
    def restricts(self) -> bool:
        return bool(self.allow or self.deny)

    def admits(self, address: str) -> bool:
        known = self._known.get(address)
        if known is None:
            known = self._decide(address)
            if len(self._known) >= _MAX_KNOWN:
                self._known.clear()
            self._known[address] = known
        return known

    def _decide(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return not self.allow  # not an address (a unix socket's peer): only a deny list admits it
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 (a dual-stack socket's view)
        if any(ip in net for net in self.deny):
            return False
        return not self.allow or any(ip in net for net in self.allow)
