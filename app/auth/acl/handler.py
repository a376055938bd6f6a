"""Roles: which consumers may use a route (``allow_roles`` / ``deny_roles``). Deny wins: a consumer
holding a denied role is refused whatever else it holds."""

from __future__ import annotations

from collections.abc import Iterable


class RoleRule:
    __slots__ = ("allow", "deny")

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow = frozenset(allow)
        self.deny = frozenset(deny)

    @property
    def restricts(self) -> bool:
        return bool(self.allow or self.deny)

    def permits(self, roles: frozenset[str]) -> bool:
        if self.deny and not self.deny.isdisjoint(roles):
            return False
        return not self.allow or not self.allow.isdisjoint(roles)
