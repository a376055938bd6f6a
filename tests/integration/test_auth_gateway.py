"""Authentication and access control in a running gateway (real sockets, a real Redis): keys and
JWTs required per route, roles, address rules, what the backend sees, failed attempts that cool an
address off, and private answers cached per consumer."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import parse_config
from tests.jwt_keys import AUDIENCE, ISSUER, SigningKey, jwks
from tests.support import BackendServer, GatewayThread

pytestmark = pytest.mark.redis

ACME_KEY = "acme-key-0123456789abcdef"
OPS_KEY = "ops-key-0123456789abcdef0"
IDP = SigningKey("idp-1", "RS256")


def _config(redis_url: str, backend: BackendServer, jwks_file: Path, **auth: Any) -> dict[str, Any]:
    url = backend.url
    return {
        "redis": {"url": redis_url, "prefix": f"t{uuid.uuid4().hex[:8]}"},
        "rate_limiter": {
            "default": {"requests_per_minute": 1000, "requests_per_hour": None},
            "api_keys": [{"key": ACME_KEY, "client_id": "acme", "roles": ["reader"]},
                         {"key": OPS_KEY, "client_id": "ops-team", "roles": ["admin", "suspended"]}],
            # The tests speak for many addresses through X-Forwarded-For.
            "trusted_proxies": ["127.0.0.0/8"],
        },
        "auth": {"methods": ["api_key"], "jwt": {"jwks_file": str(jwks_file), "issuer": ISSUER, "audience": AUDIENCE},
                 "abuse": {"threshold": 3, "window": 60, "cooldown": 2}, **auth},
        "cache": {"enabled": False},
        "router": {"routes": [
            {"path": "/keyed/*", "target": url},
            {"path": "/open/*", "target": url, "auth": {"methods": []}},
            {"path": "/admin-api/*", "target": url, "auth": {"methods": ["jwt"], "allow_roles": ["admin"],
                                                               "deny_roles": ["suspended"]}},
            {"path": "/either/*", "target": url, "auth": {"methods": ["api_key", "jwt"]}},
            {"path": "/forwarded/*", "target": url, "auth": {
                "forward_credentials": True, "consumer_headers": {"id": "X-User", "roles": "X-User-Roles"}}},
            {"path": "/by-query/*", "target": url, "auth": {"api_key": {"header": None, "query": "apikey"}}},
            {"path": "/inside/*", "target": url, "auth": {"methods": [], "ip_allow": ["198.51.100.0/24"]}},
            {"path": "/cached/*", "target": url, "strip_prefix": True, "cache": {"enabled": True, "ttl": 60}},
        ]},
    }


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(IDP)))
    return path


@pytest.fixture
def gateway(redis_url: str, backend: BackendServer, jwks_file: Path) -> Iterator[GatewayThread]:
    config = _config(redis_url, backend, jwks_file, ip_deny=["203.0.113.0/24"])
    config["cache"] = {"enabled": True}
    with GatewayThread(parse_config(config, {})) as server:
        yield server


def _from(address: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": address, **headers}


def _last(backend: BackendServer) -> dict[str, Any]:
    return httpx.get(f"{backend.url}/__last").json()


def test_a_route_with_auth_requires_a_credential(gateway: GatewayThread, backend: BackendServer) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        missing = client.get("/keyed/x")
        assert missing.status_code == 401
        assert missing.json() == {"error": "authentication required"}
        assert missing.headers["www-authenticate"] == 'ApiKey realm="apigw", header="X-API-Key"'
        assert missing.headers["content-type"] == "application/json"
        both = client.get("/either/x")
        assert both.headers.get_list("www-authenticate") == [
            'ApiKey realm="apigw", header="X-API-Key"', 'Bearer realm="apigw"']
        backend.reset_hits()
        ok = client.get("/keyed/x", headers={"X-API-Key": ACME_KEY, "X-Consumer-ID": "forged",
                                             "X-Consumer-Roles": "admin"})
        assert ok.status_code == 200
        seen = _last(backend)["headers"]
        assert seen["x-consumer-id"] == "acme" and seen["x-consumer-roles"] == "reader"
        assert "x-api-key" not in seen  # the credential is taken out
        assert client.get("/open/x").status_code == 200  # a route that sets methods: [] takes anyone
        assert client.get("/either/x", headers={"Authorization": f"Bearer {IDP.sign(sub='eve')}"}).status_code == 200
        assert _last(backend)["headers"]["x-consumer-id"] == "eve" and "authorization" not in _last(backend)["headers"]
    assert sum(backend.hits.values()) == 3  # the 401s never reached it


def test_unknown_revoked_and_malformed_keys_get_the_same_answer(gateway: GatewayThread) -> None:
    manager = gateway.gateway.orchestrator.rate_limiter.manager
    revoked = gateway.run(manager.create_api_key("mallory"))
    with httpx.Client(base_url=gateway.url) as client:
        assert client.get("/keyed/x", headers={"X-API-Key": revoked}).status_code == 200
        gateway.run(manager.revoke_api_key(revoked))
        keys = [b"never-issued-key-0123456789", revoked.encode(), b"", b"x" * 5000, b"\xff\xfe not even text",
                b"short"]
        # Each from an address of its own, so that the rate limit's own headers read the same.
        answers = [client.get("/keyed/x", headers=[(b"X-Forwarded-For", f"192.0.2.{i}".encode()), (b"X-API-Key", key)])
                   for i, key in enumerate(keys, 10)]
    first = answers[0]
    assert first.status_code == 401 and first.json() == {"error": "invalid credentials"}

    def comparable(answer: httpx.Response) -> list[tuple[str, str]]:
        # The request's own id, and the seconds to the rate-limit window's end, differ by nature.
        return sorted((k, v) for k, v in answer.headers.multi_items()
                      if k not in ("x-request-id", "ratelimit-reset", "x-ratelimit-reset"))

    for answer in answers[1:]:
        assert (answer.status_code, answer.content, comparable(answer)) == \
               (first.status_code, first.content, comparable(first))


def test_roles_allow_and_deny_with_deny_winning(gateway: GatewayThread, backend: BackendServer) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        def call(**claims: Any) -> httpx.Response:
            return client.get("/admin-api/x", headers={"Authorization": f"Bearer {IDP.sign(**claims)}"})

        assert call(roles=["admin"]).status_code == 200
        assert _last(backend)["headers"]["x-consumer-roles"] == "admin"
        refused = call(roles=["reader"])
        assert refused.status_code == 403 and refused.json() == {"error": "role not allowed"}
        assert call(roles=["admin", "suspended"]).status_code == 403  # deny wins
        assert call().status_code == 403  # no roles at all
        # A key is no way in where only JWTs are taken, whatever its roles.
        assert client.get("/admin-api/x", headers={"X-API-Key": OPS_KEY}).status_code == 401
        expired = call(roles=["admin"], exp=int(time.time()) - 3600)
        assert expired.status_code == 401
        assert expired.headers["www-authenticate"] == 'Bearer realm="apigw", error="invalid_token"'


def test_address_rules_global_and_per_route(gateway: GatewayThread) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        denied = client.get("/open/x", headers=_from("203.0.113.7"))
        assert denied.status_code == 403 and denied.json() == {"error": "address not allowed"}
        assert client.get("/nowhere", headers=_from("203.0.113.7")).status_code == 403  # no route: the global rules
        assert client.get("/open/x", headers=_from("192.0.2.1")).status_code == 200
        assert client.get("/inside/x", headers=_from("198.51.100.20")).status_code == 200
        assert client.get("/inside/x", headers=_from("192.0.2.1")).status_code == 403
        # The route's own lists replace the top level's: 203.0.113.x is not denied there, but not allowed either.
        assert client.get("/inside/x", headers=_from("203.0.113.7")).status_code == 403


def test_what_the_backend_sees(gateway: GatewayThread, backend: BackendServer) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        assert client.get("/forwarded/x", headers={"X-API-Key": ACME_KEY, "X-User": "forged"}).status_code == 200
        seen = _last(backend)["headers"]
        assert seen["x-api-key"] == ACME_KEY and seen["x-user"] == "acme" and seen["x-user-roles"] == "reader"
        assert client.get("/by-query/x", params={"a": "1", "apikey": ACME_KEY, "b": "2"}).status_code == 200
        assert _last(backend)["query_string"] == "a=1&b=2"
        assert client.get("/by-query/x", headers={"X-API-Key": ACME_KEY}).status_code == 401


def test_failed_attempts_cool_the_address_off(gateway: GatewayThread) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        guesser = _from("192.0.2.66")
        codes = [client.get("/keyed/x", headers={**guesser, "X-API-Key": f"guess-{i}-0123456789abcdef"}).status_code
                 for i in range(4)]
        assert codes == [401, 401, 429, 429]  # the third failure is the offence
        cooled = client.get("/keyed/x", headers={**guesser, "X-API-Key": ACME_KEY})
        assert cooled.status_code == 429  # even a right key, while it lasts
        assert cooled.json()["error"] == "too many failed authentications" and 1 <= int(cooled.headers["retry-after"]) <= 2
        assert client.get("/keyed/x", headers=_from("192.0.2.67", **{"X-API-Key": ACME_KEY})).status_code == 200
        time.sleep(2.1)
        assert client.get("/keyed/x", headers={**guesser, "X-API-Key": ACME_KEY}).status_code == 200
        # The next offence cools it off twice as long.
        for i in range(3):
            client.get("/keyed/x", headers={**guesser, "X-API-Key": f"again-{i}-0123456789abcdef"})
        assert 3 <= int(client.get("/keyed/x", headers=guesser).headers["retry-after"]) <= 4


def test_unauthenticated_attempts_count_against_the_address_limit(redis_url: str, backend: BackendServer,
                                                                  jwks_file: Path) -> None:
    config = _config(redis_url, backend, jwks_file, abuse={"enabled": False})
    config["rate_limiter"]["default"] = {"requests_per_minute": 3, "requests_per_hour": None}
    with GatewayThread(parse_config(config, {})) as gateway, httpx.Client(base_url=gateway.url) as client:
        # Naming another client on each try changes nothing: a request without a valid credential
        # is its address's.
        codes = [client.get("/keyed/x", headers=_from("192.0.2.80", **{"X-Client-ID": f"c{i}"})).status_code
                 for i in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        assert client.get("/keyed/x", headers=_from("192.0.2.80", **{"X-API-Key": ACME_KEY})).status_code == 200


def test_private_answers_are_cached_per_consumer_public_ones_shared(gateway: GatewayThread) -> None:
    alice = gateway.run(gateway.gateway.orchestrator.rate_limiter.manager.create_api_key("alice"))
    with httpx.Client(base_url=gateway.url) as client:
        def get(path: str, key: str | None) -> httpx.Response:
            return client.get(path, headers={"X-API-Key": key} if key else {})

        first = get("/cached/headers/mine", alice)  # the backend's /headers: an answer it counts
        assert first.headers["x-cache"] == "MISS" and first.json()["headers"]["x-consumer-id"] == "alice"
        again = get("/cached/headers/mine", alice)
        assert again.headers["x-cache"] == "HIT" and again.json()["n"] == first.json()["n"]
        other = get("/cached/headers/mine", ACME_KEY)
        assert other.headers["x-cache"] == "MISS" and other.json()["headers"]["x-consumer-id"] == "acme"
        assert get("/cached/headers/mine", ACME_KEY).headers["x-cache"] == "HIT"
        # A cached answer never skips authentication.
        assert get("/cached/headers/mine", None).status_code == 401
        assert get("/cached/headers/mine", "nobody-0123456789abcdef").status_code == 401
        # An answer that says public is one for everyone.
        public = "/cached/headers/shared?Cache-Control=public,max-age=60"
        assert get(public, alice).headers["x-cache"] == "MISS"
        shared = get(public, ACME_KEY)
        assert shared.headers["x-cache"] == "HIT" and shared.json()["headers"]["x-consumer-id"] == "alice"


def test_cors_preflights_are_answered_by_the_gateway(redis_url: str, backend: BackendServer, jwks_file: Path) -> None:
    config = _config(redis_url, backend, jwks_file)
    config["router"]["routes"] = [{"path": "/api/*", "method": ["GET", "PUT"], "target": backend.url, "cors": {
        "origins": ["https://app.example.com", "https://*.example.org"], "methods": ["GET", "PUT"],
        "headers": ["X-API-Key", "Content-Type"], "expose_headers": ["X-Request-ID"], "credentials": True,
        "max_age": 60}}]
    with GatewayThread(parse_config(config, {})) as gateway, httpx.Client(base_url=gateway.url) as client:
        backend.reset_hits()
        preflight = client.options("/api/x", headers={"Origin": "https://a.example.org",
                                                       "Access-Control-Request-Method": "PUT",
                                                       "Access-Control-Request-Headers": "x-api-key, content-type"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://a.example.org"
        assert preflight.headers["access-control-allow-methods"] == "GET, PUT"
        assert preflight.headers["access-control-allow-headers"] == "X-API-Key, Content-Type"
        assert preflight.headers["access-control-allow-credentials"] == "true"
        assert preflight.headers["access-control-max-age"] == "60"
        assert backend.hits == {}  # no backend call, and no credential asked of a preflight
        stranger = client.options("/api/x", headers={"Origin": "https://evil.example.net",
                                                      "Access-Control-Request-Method": "PUT"})
        assert stranger.status_code == 204
        assert not [name for name in stranger.headers if name.startswith("access-control-")]
        # The actual request's answer, a refusal included, carries them for an allowed origin.
        refused = client.put("/api/x", headers={"Origin": "https://app.example.com"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://app.example.com"
        assert refused.headers["access-control-expose-headers"] == "X-Request-ID"
        assert refused.headers["vary"] == "Origin"
        ok = client.put("/api/x", headers={"Origin": "https://app.example.com", "X-API-Key": ACME_KEY})
        assert ok.status_code == 200 and ok.headers["access-control-allow-credentials"] == "true"
        assert "access-control-allow-origin" not in client.get(
            "/api/x", headers={"Origin": "https://evil.example.net", "X-API-Key": ACME_KEY}).headers
        # OPTIONS that is no preflight, on a route without OPTIONS: no route, as before.
        assert client.options("/api/x").status_code == 404
