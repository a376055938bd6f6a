"""The admin API's guard: bearer tokens, each with a role (``read`` may GET, ``write`` may change).

``admin.token`` (API_GATEWAY_ADMIN_TOKEN) is a write token named "admin"; ``admin.tokens`` lists
more, each by its sha256 only, so the config holds no token in clear. No token configured means the
admin API is off (403 on every admin call), never open. Tokens are compared in constant time: the
presented one is hashed to a fixed-length digest and compared with every configured digest, so
neither the content nor the length of a token leaks through timing, nor which one matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

# Declared in the OpenAPI document, so clients (and schemathesis) know which calls need the token.
bearer = HTTPBearer(auto_error=False, scheme_name="adminToken",
                    description="The value of API_GATEWAY_ADMIN_TOKEN (config: admin.token)")

OFF_MESSAGE = "the admin API is off: set API_GATEWAY_ADMIN_TOKEN (admin.token) or admin.tokens to turn it on"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


Role = Literal["read", "write"]
_READING = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Admin:
    """Who presented a token: its name and role, never the token nor its digest (the audit log's who)."""

    name: str
    role: Role


class AdminToken:
    def __init__(self, token: str | None, name: str = "admin", role: Role = "write",
                 digest: bytes | None = None) -> None:
        self._digest = digest if digest is not None else _digest(token) if token else None
        self.name = name
        self.role = role

    @classmethod
    def hashed(cls, sha256_hex: str, name: str, role: Role) -> AdminToken:
        return cls(None, name, role, bytes.fromhex(sha256_hex))

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    def accepts(self, presented: str) -> bool:
        return self._digest is not None and hmac.compare_digest(_digest(presented), self._digest)

    def matches(self, digest: bytes) -> bool:
        return self._digest is not None and hmac.compare_digest(digest, self._digest)


class AdminTokens:
    def __init__(self, tokens: Iterable[AdminToken]) -> None:
        self.tokens = [token for token in tokens if token.enabled]

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    def holder(self, presented: str) -> AdminToken | None:
        """The token ``presented`` is, or None; every configured token is compared (no early exit)."""
        digest = _digest(presented)
        found = None
        for token in self.tokens:
            if token.matches(digest):
                found = token
        return found


def admin_guard(tokens: AdminTokens) -> Callable[..., Awaitable[None]]:
    """The FastAPI dependency every admin route carries; who holds the token is left in
    ``request.state.admin`` as an ``Admin`` (who made a change, for the audit log)."""

    async def require_admin(request: Request,
                            credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        if not tokens.enabled:
            raise HTTPException(403, OFF_MESSAGE)
        holder = tokens.holder(credentials.credentials) if credentials is not None else None
        if holder is None:
            raise HTTPException(401, "missing or wrong admin token",
                                headers={"WWW-Authenticate": 'Bearer realm="apigw-admin"'})
        request.state.admin = Admin(holder.name, holder.role)  # also for a refusal: the audit log says who tried
        if holder.role == "read" and request.method not in _READING:
            raise HTTPException(403, f"the admin token {holder.name!r} may only read")

    return require_admin
