"""A route's authentication, made once from its merged ``auth:`` section: the ways a client may
prove who it is, the roles it needs, and what the backend is told."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from app.auth.acl.handler import RoleRule
from app.auth.jwt_auth.handler import JwtAuth
from app.auth.key_auth.handler import KeyAuth
from app.auth.consumer import Consumer
from app.auth.key_auth.handler import without_parameter
from app.pipeline.exchange import JSON_CONTENT, Exchange, RawHeaders, Reply

Authenticator = KeyAuth | JwtAuth


def _reply(status: int, body: dict[str, object], headers: RawHeaders) -> tuple[int, bytes, RawHeaders]:
    raw = orjson.dumps(body)
    return status, raw, [JSON_CONTENT, (b"content-length", str(len(raw)).encode()), *headers]


@dataclass(slots=True)
class RouteAuth:
    methods: tuple[Authenticator, ...]
    roles: RoleRule
    id_header: bytes
    roles_header: bytes
    # Removed from an admitted request before the backend: the client's copies of the consumer
    # headers, and the credentials (unless forward_credentials), header and query parameter.
    dropped_headers: frozenset[bytes]
    dropped_parameters: tuple[bytes, ...]
    # The answers this route refuses with, made once: (status, body, headers). Every wrong
    # credential gets the very same one, whatever was wrong with it.
    missing: tuple[int, bytes, RawHeaders]
    invalid: tuple[int, bytes, RawHeaders]
    forbidden: tuple[int, bytes, RawHeaders]

    @classmethod
    def of(cls, methods: tuple[Authenticator, ...], roles: RoleRule, forward_credentials: bool,
           id_header: str, roles_header: str) -> RouteAuth:
        challenges = [(b"www-authenticate", method.challenge) for method in methods]
        invalid_challenges = [(b"www-authenticate", m.challenge + b', error="invalid_token"' if m.method == "jwt"
                               else m.challenge) for m in methods]
        ids = id_header.lower().encode(), roles_header.lower().encode()
        credentials = () if forward_credentials else methods
        return cls(methods=methods, roles=roles, id_header=ids[0], roles_header=ids[1],
                   dropped_headers=frozenset([*ids, *(m.header for m in credentials if m.header is not None)]),
                   dropped_parameters=tuple(m.query for m in credentials if m.query is not None),
                   missing=_reply(401, {"error": "authentication required"}, challenges),
                   invalid=_reply(401, {"error": "invalid credentials"}, invalid_challenges),
                   forbidden=_reply(403, {"error": "role not allowed"}, []))

    def admit(self, ex: Exchange, consumer: Consumer) -> None:
        """The request as the backend gets it: who the consumer is, and no credential (one pass)."""
        dropped = self.dropped_headers
        headers = [pair for pair in ex.headers if pair[0] not in dropped]
        headers.append((self.id_header, consumer.id.encode("latin-1", "replace")))
        headers.append((self.roles_header, consumer.roles_value))
        ex.replace_headers(headers)
        for name in self.dropped_parameters:
            if name in ex.query_string:
                ex.query_string = without_parameter(ex.query_string, name)

    @staticmethod
    def answer(made: tuple[int, bytes, RawHeaders]) -> Reply:
        status, body, headers = made
        return Reply(status, list(headers), body)  # its own list: the proxy adds to it
