"""The admin API's guard: a bearer token (``admin.token``, API_GATEWAY_ADMIN_TOKEN).

No token configured means the admin API is off (403 on every admin call), never open. The token is
compared in constant time: both sides are hashed to fixed-length digests first, so neither the
content nor the length of the configured token leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

# Declared in the OpenAPI document, so clients (and schemathesis) know which calls need the token.
bearer = HTTPBearer(auto_error=False, scheme_name="adminToken",
                    description="The value of API_GATEWAY_ADMIN_TOKEN (config: admin.token)")

OFF_MESSAGE = "the admin API is off: set API_GATEWAY_ADMIN_TOKEN (admin.token) to turn it on"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class AdminToken:
    def __init__(self, token: str | None) -> None:
        self._digest = _digest(token) if token else None

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    def accepts(self, presented: str) -> bool:
        return self._digest is not None and hmac.compare_digest(_digest(presented), self._digest)


def admin_guard(token: AdminToken) -> Callable[..., Awaitable[None]]:
    """The FastAPI dependency every admin route carries."""

    async def require_admin(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        if not token.enabled:
            raise HTTPException(403, OFF_MESSAGE)
        if credentials is None or not token.accepts(credentials.credentials):
            raise HTTPException(401, "missing or wrong admin token",
                                headers={"WWW-Authenticate": 'Bearer realm="apigw-admin"'})

    return require_admin
