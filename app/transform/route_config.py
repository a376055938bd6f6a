"""Per-route transformation config (the ``transform:`` key of a route), validated at load time."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator, model_validator

from app.schema import StrictModel, header_name
from app.transform.mapper import SchemaMapper
from app.transform.paths import check_field_mappings
from app.transform.spec import RuleSpec


def _header_value(value: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise ValueError("a header value can't contain CR, LF or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("a header value must be Latin-1 text") from None
    return value


class HeaderOps(StrictModel):
    """Applied in this order: ``remove`` names, ``rename`` old -> new, then ``add``, which sets
    a header (replacing any value it had). Names are case-insensitive."""

    add: dict[str, str] = {}
    remove: list[str] = []
    rename: dict[str, str] = {}

    @field_validator("add")
    @classmethod
    def _add(cls, value: dict[str, str]) -> dict[str, str]:
        return {header_name(k): _header_value(v) for k, v in value.items()}

    @field_validator("remove")
    @classmethod
    def _remove(cls, value: list[str]) -> list[str]:
        return [header_name(k) for k in value]

    @field_validator("rename")
    @classmethod
    def _rename(cls, value: dict[str, str]) -> dict[str, str]:
        return {header_name(k): header_name(v) for k, v in value.items()}


class QueryOps(StrictModel):
    """Query parameters, in the same order as headers: remove, rename, add (sets the parameter,
    replacing every value it had). Names are compared decoded and case-sensitively."""

    add: dict[str, str] = {}
    remove: list[str] = []
    rename: dict[str, str] = {}

    @field_validator("add", "rename")
    @classmethod
    def _names(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if any(not k for k in value) or (info.field_name == "rename" and any(not v for v in value.values())):
            raise ValueError("a query parameter name can't be empty")
        return value

    @field_validator("remove")
    @classmethod
    def _remove(cls, value: list[str]) -> list[str]:
        if any(not k for k in value):
            raise ValueError("a query parameter name can't be empty")
        return value


class MappingSpec(StrictModel):
    """Field paths of ``source`` version -> ``target`` version; also used inverted."""

    source: str = Field(min_length=1)
    target: str = Field(min_length=1)
    fields: dict[str, str] = {}
    keep_unmapped: bool = True

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict[str, str]) -> dict[str, str]:
        check_field_mappings(value)
        return value

    @model_validator(mode="after")
    def _two_versions(self) -> MappingSpec:
        if self.source == self.target:
            raise ValueError("source and target must be different versions")
        return self


class RouteTransform(StrictModel):
    """How one route transforms requests and responses.

    The client's version comes from the path segment ``client_version_path_segment`` (0 is the
    first segment, used only when it names a known version), else the ``client_version_header``
    header, else ``default_client_version`` (which defaults to ``backend_version``). Bodies are
    mapped from the client's version to ``backend_version`` on the way in and back on the way
    out; ``request_rules`` and ``response_rules`` address the backend's field names.
    """

    client_version_header: str = "X-API-Version"
    client_version_path_segment: int | None = Field(default=None, ge=0)
    default_client_version: str | None = None
    backend_version: str | None = None
    mappings: list[MappingSpec] = []
    request_rules: list[RuleSpec] = []
    response_rules: list[RuleSpec] = []
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()
    query: QueryOps = QueryOps()

    @field_validator("client_version_header")
    @classmethod
    def _version_header(cls, value: str) -> str:
        return header_name(value)

    @model_validator(mode="after")
    def _versions(self) -> RouteTransform:
        if not self.mappings:
            return self
        pairs = [(m.source, m.target) for m in self.mappings]
        if len(set(pairs)) != len(pairs):
            raise ValueError("mappings: the same source -> target is declared twice")
        if self.backend_version is None:
            raise ValueError("backend_version: required when mappings are set")
        mapper = self.build_mapper()
        if self.backend_version not in mapper.schemas():
            raise ValueError(f"backend_version: {self.backend_version!r} appears in no mapping")
        default = self.default_client_version
        if default is not None and mapper.chain(default, self.backend_version) is None:
            raise ValueError(
                f"default_client_version: no mapping leads from {default!r} to {self.backend_version!r}"
            )
        return self

    def build_mapper(self) -> SchemaMapper:
        mapper = SchemaMapper()
        for m in self.mappings:
            mapper.add_mapping(m.source, m.target, m.fields, m.keep_unmapped)
        return mapper
