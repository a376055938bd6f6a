"""The ``auth:`` section: at the top level it is every route's default, and a route's own ``auth:``
overrides the fields it sets (a nested section, such as ``jwt``, field by field).

``methods`` lists the ways a client may prove who it is; any one of them admits, and none (the
default) means the route takes anyone. Roles and address rules apply on their own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, field_validator, model_validator

from app.schema import StrictModel, header_name
from app.auth.abuse.schema import AbuseSpec
from app.auth.ip_restriction.schema import cidr_list
from app.auth.jwt_auth.schema import JwtSpec
from app.auth.key_auth.schema import ApiKeyLocation

AuthMethod = Literal["api_key", "jwt"]


class ConsumerHeaders(StrictModel):
    """The headers that tell the backend who the gateway let in (the client's copies are removed)."""

    id: str = "X-Consumer-ID"
    roles: str = "X-Consumer-Roles"

    @field_validator("id", "roles")
    @classmethod
    def _name(cls, value: str) -> str:
        return header_name(value)


class AuthSpec(StrictModel):
    methods: list[AuthMethod] = []
    api_key: ApiKeyLocation = ApiKeyLocation()
    jwt: JwtSpec | None = None
    # Which roles may use the route: a client needs one of ``allow_roles`` (when listed) and none of
    # ``deny_roles``; deny wins.
    allow_roles: list[str] = []
    deny_roles: list[str] = []
    # Addresses (CIDR) refused, and when listed, the only ones admitted; deny wins.
    ip_allow: list[str] = []
    ip_deny: list[str] = []
    # The backend gets the client's credential too (else it is removed once checked).
    forward_credentials: bool = False
    consumer_headers: ConsumerHeaders = ConsumerHeaders()

    @field_validator("methods")
    @classmethod
    def _once_each(cls, methods: list[str]) -> list[str]:
        return list(dict.fromkeys(methods))

    @field_validator("ip_allow", "ip_deny")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        return cidr_list(values)

    @property
    def authenticates(self) -> bool:
        return bool(self.methods)

    def check(self) -> None:
        """What only the merged section can tell (a route may take ``jwt`` from the top level)."""
        if "jwt" in self.methods and self.jwt is None:
            raise ValueError("methods lists jwt, but no jwt section says how tokens are verified")
        if self.jwt is not None:
            self.jwt.check()
        if "api_key" in self.methods:
            self.api_key.check()
        if (self.allow_roles or self.deny_roles) and not self.methods:
            raise ValueError("allow_roles and deny_roles need methods: a client without credentials has no roles")


class AuthSection(AuthSpec):
    """The top level's ``auth:``; ``abuse`` is per address, so it has no per-route form."""

    abuse: AbuseSpec = AbuseSpec()

    @model_validator(mode="after")
    def _consistent(self) -> AuthSection:
        self.check()
        return self


def _merged(base: BaseModel, override: BaseModel) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in override.model_fields_set:
        mine, theirs = getattr(override, name), getattr(base, name, None)
        if isinstance(mine, BaseModel) and isinstance(theirs, type(mine)):
            fields[name] = type(mine).model_validate(_merged(theirs, mine) | {
                f: getattr(theirs, f) for f in type(mine).model_fields if f not in mine.model_fields_set})
        else:
            fields[name] = mine
    return fields


def route_auth(section: AuthSection, own: AuthSpec | None) -> AuthSpec:
    """A route's rules: its own ``auth:`` over the top level's, field by field."""
    inherited = {name: getattr(section, name) for name in AuthSpec.model_fields}
    if own is None:
        return AuthSpec.model_construct(_fields_set=set(), **inherited)
    return AuthSpec.model_validate(inherited | _merged(section, own))
