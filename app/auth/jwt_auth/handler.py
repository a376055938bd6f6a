"""Bearer JWTs (``Authorization: Bearer <token>``), verified with PyJWT against the JWKS's keys.

A token is checked with the key its ``kid`` names, and only when that key is bound to the token's
``alg`` (``parse_jwks``): ``alg: none`` and algorithm confusion (an HS256 token "signed" with an
RSA public key) never verify. ``exp`` is required; ``nbf`` is checked when present; ``iss`` and
``aud`` when the config names them, all with ``leeway``.

A verified token is kept, by its sha256, until it expires: a client repeats its token on every
request, and checking an RS256 signature costs far more than a hash. The kept tokens are dropped
when the key set changes, so a key removed from the JWKS stops admitting its tokens.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

import jwt
from jwt.exceptions import PyJWTError

from app.auth.consumer import Consumer, Verdict
from app.auth.jwt_auth.keys import JwksError, JwksSource
from app.auth.jwt_auth.schema import JwtSpec
from app.pipeline.exchange import Exchange

AUTHORIZATION = b"authorization"
# A header larger than this is no token worth parsing.
_MAX_TOKEN = 8192
_MAX_VERIFIED = 10_000
# A client id the backend can be told in a header: printable Latin-1, at most 256 characters.
_PRINTABLE = re.compile(r"^[\x20-\x7e\xa0-\xff]{1,256}$")
_ROLE = re.compile(r"^[\x21-\x2b\x2d-\x7e]{1,128}$")


def claim_roles(value: Any) -> frozenset[str] | None:
    """A roles claim: a list of names, or one string of space-separated names; None if neither
    (a name is visible ASCII without a comma: the backend gets them comma-separated)."""
    roles = value.split() if isinstance(value, str) else value
    if isinstance(roles, list) and all(isinstance(role, str) and _ROLE.match(role) for role in roles):
        return frozenset(roles)
    return None


class JwtAuth:
    method = "jwt"
    # Where the credential is (what is taken out of the request once checked).
    header = AUTHORIZATION
    query = None

    def __init__(self, spec: JwtSpec, keys: JwksSource, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.keys = keys
        self.clock = clock
        self.algorithms = list(spec.algorithms)
        self._options: dict[str, Any] = {
            "require": ["exp", *(["iss"] if spec.issuer else []), *(["aud"] if spec.audience else [])],
            "verify_aud": spec.audience is not None,
        }
        # sha256 of a token -> (its consumer, when it stops being valid)
        self._verified: dict[bytes, tuple[Consumer, float]] = {}
        keys.on_change(self._verified.clear)
        self.challenge = b'Bearer realm="apigw"'
        self.verifications = 0  # signatures checked (the rest came from ``_verified``)

    def credential(self, ex: Exchange) -> bytes | None:
        value = ex.header(AUTHORIZATION)
        if value is None or value[:7].lower() != b"bearer ":
            return None
        return value[7:].strip()

    def authenticate(self, ex: Exchange) -> Consumer | Verdict:
        token = self.credential(ex)
        if token is None:
            return Verdict.ABSENT
        if not token or len(token) > _MAX_TOKEN:
            return Verdict.INVALID
        digest = hashlib.sha256(token).digest()
        kept = self._verified.get(digest)
        if kept is not None:
            if kept[1] > self.clock():
                return kept[0]
            del self._verified[digest]
        return self._verify(token, digest)

    async def authenticate_with_new_keys(self, ex: Exchange) -> Consumer | Verdict:
        """After ``UNKNOWN_KEY``: read the key set again (or wait for the read under way), then
        check once more; a kid still unknown is then invalid."""
        try:
            await self.keys.refresh()
        except JwksError:
            return Verdict.INVALID
        verdict = self.authenticate(ex)
        return Verdict.INVALID if verdict is Verdict.UNKNOWN_KEY else verdict

    def _verify(self, token: bytes, digest: bytes) -> Consumer | Verdict:
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            return Verdict.INVALID
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms or not isinstance(kid, str | None):
            return Verdict.INVALID
        key = self.keys.find(kid, alg)
        if key is None:
            return Verdict.UNKNOWN_KEY if not self.keys.knows(kid) and self.keys.may_read_again() else Verdict.INVALID
        self.verifications += 1
        spec = self.spec
        try:
            claims = jwt.decode(token, key, algorithms=[alg], audience=spec.audience, issuer=spec.issuer,
                                leeway=spec.leeway, options=self._options)  # type: ignore[arg-type]
        except PyJWTError:
            return Verdict.INVALID
        consumer = self._consumer(claims)
        if consumer is None:
            return Verdict.INVALID
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified.clear()
        self._verified[digest] = (consumer, float(claims["exp"]) + spec.leeway)
        return consumer

    def _consumer(self, claims: dict[str, Any]) -> Consumer | None:
        spec = self.spec
        client_id = claims.get(spec.client_id_claim)
        if isinstance(client_id, int) and not isinstance(client_id, bool):
            client_id = str(client_id)
        if not isinstance(client_id, str) or not _PRINTABLE.match(client_id):
            return None  # it becomes a header value and part of store keys
        roles: frozenset[str] | None = frozenset()
        if spec.roles_claim is not None and spec.roles_claim in claims:
            roles = claim_roles(claims[spec.roles_claim])
            if roles is None:
                return None
        tier = claims.get(spec.tier_claim) if spec.tier_claim is not None else None
        return Consumer(client_id, tier if isinstance(tier, str) else None, roles, self.method)
