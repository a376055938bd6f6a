"""Which other sites' pages may call a route from a browser (a route's ``cors:``)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from app.schema import StrictModel, header_name

# scheme://host[:port], the host possibly starting with "*." (any subdomain, not the domain itself).
_ORIGIN = re.compile(r"^https?://(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$")
_METHOD = re.compile(r"^[A-Z]+$")


class CorsSpec(StrictModel):
    # "https://app.example.com" exactly, "https://*.example.com" for any subdomain, or "*" for any
    # origin (not with credentials: a browser refuses "*" then, and echoing every origin would let
    # any site act with the user's cookies).
    origins: list[str] = Field(min_length=1)
    methods: list[str] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    # Request headers a page may send beyond the CORS-safelisted ones; "*": whatever it asks for.
    headers: list[str] = []
    # Response headers a page may read beyond the safelisted ones.
    expose_headers: list[str] = []
    credentials: bool = False
    # How long a browser may keep a preflight's answer, in seconds; None: its own default (5 s).
    max_age: int | None = Field(default=600, ge=0)

    @field_validator("origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        normal = []
        for origin in origins:
            origin = origin.strip().lower().rstrip("/")
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"{origin!r}: an origin is scheme://host[:port] (or https://*.domain, or *)")
            normal.append(origin)
        return normal

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        upper = [m.upper() for m in methods]
        for method in upper:
            if not _METHOD.match(method):
                raise ValueError(f"{method!r} is not a method name")
        return upper

    @field_validator("headers", "expose_headers")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        return [name if name == "*" else header_name(name) for name in names]

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsSpec:
        if self.credentials and "*" in self.origins:
            raise ValueError("origins: '*' can't be used with credentials: true; list the origins")
        return self
