"""A route's transformation compiled once, called by the proxy per request.

Everything is precomputed at build time; each method is a pure function over plain data.
Headers are ASGI-style lists of ``(name, value)`` byte pairs, for the client's request and the
backend's response alike; names are matched case-insensitively and written lowercase.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote_plus, unquote_to_bytes

import orjson

from app.transform.converter import DataConverter
from app.transform.engine import run_rules
from app.transform.errors import TransformationError
from app.transform.mapper import Chain, apply_chain
from app.transform.route_config import HeaderOps, QueryOps, RouteTransform
from app.transform.spec import rule_from_spec

Headers = list[tuple[bytes, bytes]]


class _HeaderPlan:
    __slots__ = ("remove", "rename", "add", "add_names", "noop")

    def __init__(
        self, ops: HeaderOps, drop: Iterable[str] = (), set_: Mapping[str, str] | None = None
    ) -> None:
        add = {k.lower(): v for k, v in (set_ or {}).items()}
        add.update({k.lower(): v for k, v in ops.add.items()})  # the route's own settings win
        self.remove = frozenset(n.lower().encode() for n in (*ops.remove, *drop))
        self.rename = {k.lower().encode(): v.lower().encode() for k, v in ops.rename.items()}
        self.add = [(k.encode(), v.encode("latin-1")) for k, v in add.items()]
        self.add_names = frozenset(k for k, _ in self.add)
        self.noop = not (self.remove or self.rename or self.add)

    def apply(self, headers: Headers) -> Headers:
        if self.noop:
            return headers
        out: Headers = []
        for name, value in headers:
            low = name.lower()
            if low in self.remove:
                continue
            low = self.rename.get(low, low)
            if low in self.add_names:  # add sets: drop what it replaces
                continue
            out.append((low, value))
        out.extend(self.add)
        return out


class _QueryPlan:
    __slots__ = ("remove", "rename", "add", "add_names", "noop")

    def __init__(self, ops: QueryOps) -> None:
        # Names are compared decoded (as UTF-8 bytes); new names and values are written encoded.
        self.remove = frozenset(n.encode() for n in ops.remove)
        self.add_names = frozenset(n.encode() for n in ops.add)
        self.rename = {k.encode(): (quote_plus(v).encode(), v.encode()) for k, v in ops.rename.items()}
        self.add = [f"{quote_plus(k)}={quote_plus(v)}".encode() for k, v in ops.add.items()]
        self.noop = not (ops.remove or ops.rename or ops.add)

    def apply(self, query_string: bytes) -> bytes:
        if self.noop:
            return query_string
        parts: list[bytes] = []
        for part in query_string.split(b"&"):
            if not part:
                continue
            raw_name, sep, raw_value = part.partition(b"=")
            # Untouched parameters keep their exact encoding; only names are decoded, to compare.
            name = raw_name
            if b"%" in raw_name or b"+" in raw_name:
                name = unquote_to_bytes(raw_name.replace(b"+", b" "))
            if name in self.remove:
                continue
            renamed = self.rename.get(name)
            if renamed is not None:
                part, name = renamed[0] + sep + raw_value, renamed[1]
            if name in self.add_names:  # add sets: drop what it replaces
                continue
            parts.append(part)
        parts.extend(self.add)
        return b"&".join(parts)


class CompiledTransform:
    """Built once from a RouteTransform (or its dict); the proxy calls:

    - ``has_body_rules`` (and ``has_request_body_rules`` / ``has_response_body_rules``): only
      then buffer that body; otherwise stream it untouched.
    - ``client_version(headers, path=None)``: the client's schema version.
    - ``request_headers(headers)`` / ``response_headers(headers)``: the header lists to send on.
      When a body is rewritten its ``content-length`` is dropped (the proxy sends the length of
      the body it has), and a route that rewrites responses asks the backend for
      ``accept-encoding: identity``, since a compressed answer can't be rewritten.
    - ``query(query_string)``: the raw query string to send on.
    - ``request_body(body, client_version)`` / ``response_body(body, client_version)``.

    Bad input raises TransformationError (answer 400 with ``.to_dict()``): a request body that
    isn't JSON, an unknown client version, a field that doesn't convert, a rule that raises.
    A response body that isn't JSON (a backend's error page, say) passes through unchanged.
    """

    def __init__(self, spec: RouteTransform, converter: DataConverter | None = None) -> None:
        converter = converter or DataConverter()
        self.spec = spec
        self.backend_version = spec.backend_version or ""
        self.default_client_version = spec.default_client_version or self.backend_version
        self._version_header = spec.client_version_header
        self._version_header_bytes = spec.client_version_header.lower().encode()
        self._path_segment = spec.client_version_path_segment

        self._to_backend: dict[str, Chain] = {}
        self._from_backend: dict[str, Chain] = {}
        if spec.mappings:
            mapper = spec.build_mapper()
            for version in mapper.schemas():
                to_backend = mapper.chain(version, self.backend_version)
                if to_backend is not None:
                    self._to_backend[version] = to_backend
                    self._from_backend[version] = mapper.chain(self.backend_version, version) or ()
        self.known_versions = frozenset(self._to_backend)

        self._request_rules = tuple(rule_from_spec(r, "request", converter) for r in spec.request_rules)
        self._response_rules = tuple(rule_from_spec(r, "response", converter) for r in spec.response_rules)
        self.has_request_body_rules = bool(spec.mappings or spec.request_rules)
        self.has_response_body_rules = bool(spec.mappings or spec.response_rules)
        self.has_body_rules = self.has_request_body_rules or self.has_response_body_rules

        self._request_headers = _HeaderPlan(
            spec.request_headers,
            drop=("content-length",) if self.has_request_body_rules else (),
            set_={"accept-encoding": "identity"} if self.has_response_body_rules else None,
        )
        self._response_headers = _HeaderPlan(
            spec.response_headers, drop=("content-length",) if self.has_response_body_rules else ()
        )
        self._query = _QueryPlan(spec.query)

    @classmethod
    def from_config(cls, config: RouteTransform | Mapping[str, Any]) -> CompiledTransform:
        if not isinstance(config, RouteTransform):
            config = RouteTransform.model_validate(config)
        return cls(config)

    def client_version(
        self, headers: Mapping[str, str] | Iterable[tuple[bytes, bytes]], path: str | None = None
    ) -> str:
        if self._path_segment is not None and path:
            segments = [s for s in path.split("/") if s]
            if self._path_segment < len(segments) and segments[self._path_segment] in self.known_versions:
                return segments[self._path_segment]
        value: str | None = None
        if isinstance(headers, Mapping):
            value = headers.get(self._version_header.lower()) or headers.get(self._version_header)
            if value is None:  # a plain dict in some other casing
                wanted = self._version_header.lower()
                value = next((v for k, v in headers.items() if k.lower() == wanted), None)
        else:
            for name, raw in headers:
                if name.lower() == self._version_header_bytes:
                    value = raw.decode("latin-1")
                    break
        value = value.strip() if value else ""
        return value or self.default_client_version

    def request_headers(self, headers: Headers) -> Headers:
        return self._request_headers.apply(headers)

    def response_headers(self, headers: Headers) -> Headers:
        return self._response_headers.apply(headers)

    def query(self, query_string: bytes) -> bytes:
        return self._query.apply(query_string)

    def request_body(self, body: bytes, client_version: str) -> bytes:
        if not self.has_request_body_rules:
            return body
        # An unknown version is refused even without a body, before the backend is called.
        chain = self._chain(self._to_backend, client_version)
        if not (chain or self._request_rules) or _blank(body):
            return body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise TransformationError(
                f"request body is not valid JSON: {exc}", field="body", rule="json"
            ) from None
        return _dump(run_rules(apply_chain(data, chain), self._request_rules))

    def response_body(self, body: bytes, client_version: str) -> bytes:
        if not self.has_response_body_rules:
            return body
        chain = self._chain(self._from_backend, client_version)
        if not (chain or self._response_rules) or _blank(body):
            return body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body  # not ours to judge: the client gets the backend's answer as it is
        return _dump(apply_chain(run_rules(data, self._response_rules), chain))

    def _chain(self, table: dict[str, Chain], version: str) -> Chain:
        if not self._to_backend:
            return ()  # no mappings: the version makes no difference
        chain = table.get(version)
        if chain is None:
            known = ", ".join(sorted(self.known_versions))
            raise TransformationError(
                f"unknown API version {version!r}; this route serves {known}",
                field=self._version_header,
                rule="version",
            )
        return chain


def _blank(body: bytes) -> bool:
    return not body or body.isspace()


def _dump(data: Any) -> bytes:
    try:
        return orjson.dumps(data)
    except TypeError as exc:  # orjson.JSONEncodeError: e.g. an integer beyond 64 bits
        raise TransformationError(
            f"transformed body can't be written as JSON: {exc}", field="body", rule="json"
        ) from None
