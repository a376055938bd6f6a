"""Address rules: CIDR lists checked against the client's address (``ip_allow`` / ``ip_deny``)."""

from __future__ import annotations

import ipaddress


def cidr_list(values: list[str]) -> list[str]:
    """Validates each entry as an address or a network (host bits may be set: 10.1.2.3/8 is 10/8)."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an address or a CIDR network") from None
    return values
