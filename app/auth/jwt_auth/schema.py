"""How bearer JWTs are verified (``auth.jwt``): where the keys come from and which claims say what."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from app.schema import StrictModel

# The algorithms the gateway verifies. Each JWK is bound to one of them (its ``alg``, else what its
# key type implies), and a token is verified only with a key bound to the token's own ``alg``: so
# ``none`` never verifies, and neither does an HS256 token "signed" with an RSA public key.
JwtAlgorithm = Literal["HS256", "RS256", "ES256", "EdDSA"]


class JwtSpec(StrictModel):
    # Exactly one of them: a JWKS document served by the identity provider, or a file holding one.
    jwks_url: str | None = None
    jwks_file: str | None = None
    # A token's kid that no cached key has makes the gateway fetch the JWKS again (keys rotate
    # without a restart), at most once per this many seconds, so that made-up kids cannot make it
    # hammer the identity provider.
    jwks_refetch_interval: float = Field(default=30.0, ge=0)
    # The set is also fetched again, in the background, once it is this old (removed keys go).
    jwks_max_age: float = Field(default=3600.0, gt=0)
    jwks_timeout: float = Field(default=5.0, gt=0)
    issuer: str | None = None
    audience: str | list[str] | None = None
    # Seconds of clock difference allowed on exp, nbf and iat.
    leeway: float = Field(default=30.0, ge=0)
    client_id_claim: str = Field(default="sub", min_length=1)
    # A list of strings, or one string of space-separated names (as OAuth's scope is).
    roles_claim: str | None = "roles"
    tier_claim: str | None = "tier"
    algorithms: list[JwtAlgorithm] = ["RS256", "ES256", "EdDSA", "HS256"]

    @field_validator("jwks_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url

    @field_validator("algorithms")
    @classmethod
    def _some(cls, algorithms: list[str]) -> list[str]:
        if not algorithms:
            raise ValueError("name at least one algorithm")
        return algorithms

    def check(self) -> None:
        """Asked of the merged section (a route may set only ``audience`` and inherit the rest)."""
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("jwt: give exactly one of jwks_url and jwks_file")
