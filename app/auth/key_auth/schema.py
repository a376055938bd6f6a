"""Where a request carries its API key (``auth.api_key``). The keys themselves stay under
``rate_limiter.api_keys``, where each names its client, tier and roles."""

from __future__ import annotations

from pydantic import field_validator

from app.schema import StrictModel, header_name


class ApiKeyLocation(StrictModel):
    # The header is looked at first, then the query parameter; None leaves that place out.
    header: str | None = "X-API-Key"
    query: str | None = None

    @field_validator("header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        return None if value is None else header_name(value)

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "&=#? ")):
            raise ValueError("a query parameter name can't be empty or hold & = # ? or a space")
        return value

    def check(self) -> None:
        """Asked of the merged section (a route may move the key from the header to the query)."""
        if self.header is None and self.query is None:
            raise ValueError("api_key: give a header or a query parameter to read the key from")
