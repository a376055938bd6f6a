"""The pieces of app/auth/ on their own: API keys, roles, address rules, CORS."""

from __future__ import annotations

import pytest

from app.auth.acl.handler import RoleRule
from app.auth.consumer import Consumer, Verdict
from app.auth.cors.handler import CorsPolicy, preflight_method
from app.auth.cors.schema import CorsSpec
from app.auth.ip_restriction.handler import IpRules
from app.auth.key_auth.handler import KeyAuth, query_value, without_parameter
from app.auth.key_auth.schema import ApiKeyLocation
from app.auth.rules import RouteAuth
from app.pipeline.exchange import Exchange
from app.ratelimit.identity import KeyOwner, ProxyTrust, hash_api_key

KEY = "a-long-random-key-of-16+-chars"


def _ex(headers: dict[str, str] | None = None, query: bytes = b"", method: str = "GET") -> Exchange:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Exchange(method=method, path="/a", raw_path=b"/a", query_string=query, headers=raw, client_addr="10.1.1.1")


def _keys(owners: dict[str, KeyOwner]) -> KeyAuth:
    table = {hash_api_key(k): v for k, v in owners.items()}
    return KeyAuth(ApiKeyLocation(header="X-API-Key", query="apikey"), table.get)


def test_a_known_key_is_its_owner_with_roles() -> None:
    auth = _keys({KEY: KeyOwner("acme", "gold", ("ops", "admin"))})
    consumer = auth.authenticate(_ex({"X-API-Key": KEY}))
    assert consumer == Consumer("acme", "gold", frozenset({"admin", "ops"}), "api_key")
    assert isinstance(consumer, Consumer) and consumer.roles_value == b"admin,ops"
    assert auth.authenticate(_ex(query=b"x=1&apikey=" + KEY.replace("+", "%2B").encode())) == consumer


@pytest.mark.parametrize("presented", ["unknown-key-of-16+-chars", "", "x" * 2000, "short"])
def test_every_wrong_key_is_the_same_invalid(presented: str) -> None:
    auth = _keys({KEY: KeyOwner("acme")})
    assert auth.authenticate(_ex({"X-API-Key": presented})) is Verdict.INVALID


def test_no_key_is_absent_and_a_revoked_key_stops_at_once() -> None:
    owners = {hash_api_key(KEY): KeyOwner("acme")}
    auth = KeyAuth(ApiKeyLocation(), owners.get)
    assert auth.authenticate(_ex()) is Verdict.ABSENT
    assert isinstance(auth.authenticate(_ex({"X-API-Key": KEY})), Consumer)
    owners.clear()
    auth.forget()  # what the rate limiter's manager calls on every key change
    assert auth.authenticate(_ex({"X-API-Key": KEY})) is Verdict.INVALID


def test_an_admitted_request_tells_the_consumer_and_loses_the_credential() -> None:
    auth = _keys({KEY: KeyOwner("acme")})
    rules = RouteAuth.of((auth,), RoleRule(), False, "X-Consumer-ID", "X-Consumer-Roles")
    ex = _ex({"X-API-Key": KEY, "Accept": "*/*", "X-Consumer-ID": "forged", "X-Consumer-Roles": "admin"},
             query=b"a=1&apikey=zzz&b=2")
    rules.admit(ex, Consumer("acme", None, frozenset({"ops"})))
    assert ex.headers == [(b"accept", b"*/*"), (b"x-consumer-id", b"acme"), (b"x-consumer-roles", b"ops")]
    assert ex.header(b"x-api-key") is None and ex.header(b"x-consumer-id") == b"acme"
    assert ex.query_string == b"a=1&b=2"


def test_forward_credentials_keeps_them() -> None:
    auth = _keys({KEY: KeyOwner("acme")})
    rules = RouteAuth.of((auth,), RoleRule(), True, "X-Who", "X-Roles")
    ex = _ex({"X-API-Key": KEY, "X-Who": "forged"}, query=b"apikey=zzz")
    rules.admit(ex, Consumer("acme"))
    assert ex.headers == [(b"x-api-key", KEY.encode()), (b"x-who", b"acme"), (b"x-roles", b"")]
    assert ex.query_string == b"apikey=zzz"


def test_query_helpers() -> None:
    assert query_value(b"a=1&key=x%20y", b"key") == b"x y"
    assert query_value(b"a=1&keys=2", b"key") is None
    assert without_parameter(b"key=1&keys=2&key", b"key") == b"keys=2"


@pytest.mark.parametrize(("allow", "deny", "roles", "permitted"), [
    ([], [], [], True),
    (["admin"], [], ["admin", "ops"], True),
    (["admin"], [], ["ops"], False),
    ([], ["banned"], ["ops"], True),
    (["admin"], ["banned"], ["admin", "banned"], False),  # deny wins
    ([], ["banned"], ["banned"], False),
])
def test_roles(allow: list[str], deny: list[str], roles: list[str], permitted: bool) -> None:
    assert RoleRule(allow, deny).permits(frozenset(roles)) is permitted


@pytest.mark.parametrize(("address", "admitted"), [
    ("10.1.2.3", True), ("10.9.0.1", False), ("192.168.0.1", False), ("::ffff:10.1.2.3", True),
    ("2001:db8::1", True), ("unix-socket", False),
])
def test_address_rules_deny_wins(address: str, admitted: bool) -> None:
    rules = IpRules(allow=["10.0.0.0/8", "2001:db8::/32"], deny=["10.9.0.0/16"])
    assert rules.admits(address) is admitted
    assert rules.admits(address) is admitted  # the kept decision agrees


def test_the_address_is_the_one_trusted_proxies_resolve() -> None:
    trust = ProxyTrust(["10.0.0.0/8"])
    headers = [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.2")]
    assert trust.address_of(headers, "10.0.0.1") == "203.0.113.9"
    assert trust.address_of(headers, "198.51.100.1") == "198.51.100.1"  # an untrusted peer speaks for itself
    assert trust.address_of([], "10.0.0.1") == "10.0.0.1"


def _cors(**spec: object) -> CorsPolicy:
    return CorsPolicy(CorsSpec.model_validate({"origins": ["https://app.example.com", "https://*.example.org"], **spec}))


@pytest.mark.parametrize(("origin", "allowed"), [
    ("https://app.example.com", True), ("https://APP.example.com", True), ("http://app.example.com", False),
    ("https://app.example.com:8443", False), ("https://a.example.org", True), ("https://a.b.example.org", True),
    ("https://example.org", False), ("https://evilexample.org", False), ("https://a.example.org.evil.com", False),
    ("null", False),
])
def test_allowed_origins(origin: str, allowed: bool) -> None:
    assert _cors().allows(origin.encode()) is allowed


def test_a_preflight_is_answered_with_what_the_route_allows() -> None:
    policy = _cors(methods=["GET", "PUT"], headers=["Authorization", "X-API-Key"], credentials=True, max_age=120)
    ex = _ex({"Origin": "https://app.example.com", "Access-Control-Request-Method": "PUT"}, method="OPTIONS")
    assert preflight_method(ex) == "PUT"
    reply = policy.preflight(ex)
    headers = dict(reply.headers)
    assert reply.status == 204
    assert headers[b"access-control-allow-origin"] == b"https://app.example.com"
    assert headers[b"access-control-allow-methods"] == b"GET, PUT"
    assert headers[b"access-control-allow-headers"] == b"Authorization, X-API-Key"
    assert headers[b"access-control-allow-credentials"] == b"true"
    assert headers[b"access-control-max-age"] == b"120"
    assert headers[b"vary"] == b"Origin"


def test_an_origin_not_allowed_gets_no_cors_headers() -> None:
    policy = _cors(credentials=True)
    ex = _ex({"Origin": "https://evil.example.net", "Access-Control-Request-Method": "GET"}, method="OPTIONS")
    assert not [n for n, _ in policy.preflight(ex).headers if n.startswith(b"access-control-")]
    assert not [n for n, _ in policy.headers_for(b"https://evil.example.net") if n.startswith(b"access-control-")]


def test_an_actual_request_gets_origin_credentials_and_exposed_headers() -> None:
    policy = _cors(credentials=True, expose_headers=["X-Request-ID", "RateLimit-Remaining"])
    assert policy.headers_for(b"https://a.example.org") == [
        (b"access-control-allow-origin", b"https://a.example.org"),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-expose-headers", b"X-Request-ID, RateLimit-Remaining"),
        (b"vary", b"Origin")]


def test_any_origin_without_credentials_is_one_answer_for_all() -> None:
    policy = CorsPolicy(CorsSpec(origins=["*"], headers=["*"]))
    assert policy.headers_for(b"https://anyone.test") == [(b"access-control-allow-origin", b"*")]
    ex = _ex({"Origin": "https://anyone.test", "Access-Control-Request-Method": "POST",
              "Access-Control-Request-Headers": "content-type, x-trace"}, method="OPTIONS")
    assert dict(policy.preflight(ex).headers)[b"access-control-allow-headers"] == b"content-type, x-trace"


def test_not_a_preflight() -> None:
    assert preflight_method(_ex({"Origin": "https://a"}, method="OPTIONS")) is None
    assert preflight_method(_ex({"Access-Control-Request-Method": "GET"}, method="OPTIONS")) is None
    assert preflight_method(_ex({"Origin": "https://a", "Access-Control-Request-Method": "GET"})) is None
