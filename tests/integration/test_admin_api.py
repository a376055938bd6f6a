"""The admin API on one gateway (memory store) in front of a real backend: auth and routes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from app.control.admin import auth
from app.config import ConfigError, parse_config
from tests.support import BackendServer, GatewayThread

TOKEN = "admin-token-for-tests-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _gateway(backend: BackendServer, **admin: object) -> GatewayThread:
    return GatewayThread(parse_config({
        "admin": admin,
        "router": {"routes": [{"id": "agents", "path": "/api/v1/agents", "method": "GET", "target": backend.url},
                              {"path": "/files/*", "target": backend.url, "strip_prefix": True}]},
    }, {}))


@pytest.fixture
def gateway(backend: BackendServer) -> Iterator[GatewayThread]:
    with _gateway(backend, token=TOKEN) as server:
        yield server


# -- auth -------------------------------------------------------------------------------------

ADMIN_CALLS = [("GET", "/_gateway/routes"), ("POST", "/_gateway/routes"), ("GET", "/_gateway/routes/agents"),
               ("PATCH", "/_gateway/routes/agents"), ("DELETE", "/_gateway/routes/agents"),
               ("POST", "/_gateway/routes/agents/disable"), ("GET", "/_gateway/config"),
               ("DELETE", "/_gateway/config/overrides"), ("GET", "/_gateway/targets")]


def test_without_a_token_the_admin_api_is_off_not_open(backend: BackendServer) -> None:
    with _gateway(backend) as gateway:
        for method, path in ADMIN_CALLS:
            for headers in ({}, {"Authorization": "Bearer anything"}, {"Authorization": "Bearer"}):
                answer = httpx.request(method, gateway.url + path, headers=headers, json={})
                assert answer.status_code == 403, (method, path, answer.text)
                assert "off" in answer.json()["error"]
        assert httpx.get(gateway.url + "/api/v1/agents").status_code == 200  # nothing was changed
        assert httpx.get(gateway.url + "/_gateway/health").status_code == 200


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN},
])
def test_a_missing_or_wrong_token_is_401(gateway: GatewayThread, headers: dict[str, str]) -> None:
    for method, path in ADMIN_CALLS:
        answer = httpx.request(method, gateway.url + path, headers=headers, json={})
        assert answer.status_code == 401, (method, path)
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json() == {"error": "missing or wrong admin token"}
    assert httpx.get(gateway.url + "/api/v1/agents").status_code == 200


def test_health_ready_metrics_and_openapi_need_no_token(gateway: GatewayThread) -> None:
    for path in ("/_gateway/health", "/_gateway/ready", "/_gateway/metrics", "/_gateway/openapi.json"):
        assert httpx.get(gateway.url + path).status_code == 200, path


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sides go through hmac.compare_digest as fixed-size digests: no early exit on the first
    different byte, and no length to learn."""
    compared: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    token = auth.AdminToken(TOKEN)
    assert token.accepts(TOKEN)
    for wrong in ("", "x", TOKEN[:-1], TOKEN + "x", "y" * 1000):
        assert not token.accepts(wrong)
    assert len(compared) == 6
    assert {(len(a), len(b)) for a, b in compared} == {(32, 32)}
    assert not auth.AdminToken(None).enabled and not auth.AdminToken("").enabled
    assert not auth.AdminToken(None).accepts("")


def test_openapi_declares_the_bearer_token_on_every_admin_call(gateway: GatewayThread) -> None:
    schema = httpx.get(gateway.url + "/_gateway/openapi.json").json()
    assert schema["components"]["securitySchemes"]["adminToken"] == {
        "type": "http", "scheme": "bearer", "description": auth.bearer.model.description}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            # The status page is static HTML that asks for the token itself; its data is guarded.
            open_call = path in ("/_gateway/health", "/_gateway/ready", "/_gateway/metrics", "/_gateway/")
            assert bool(operation.get("security")) != open_call, (method, path)
            assert "422" not in operation["responses"]


# -- routes -----------------------------------------------------------------------------------

def _admin(gateway: GatewayThread, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(method, gateway.url + "/_gateway" + path, headers=AUTH, **kwargs)  # type: ignore[arg-type]


def test_list_shows_the_files_routes_in_the_files_shape(gateway: GatewayThread, backend: BackendServer) -> None:
    answer = _admin(gateway, "GET", "/routes").json()
    assert answer["version"] == 0
    assert answer["routes"][0] == {"key": "agents", "source": "config", "enabled": True, "route": {
        "id": "agents", "path": "/api/v1/agents", "method": "GET", "targets": [{"url": backend.url}]}}
    assert answer["routes"][1]["key"] == "* /files/*"


def test_add_change_disable_enable_delete(gateway: GatewayThread, backend: BackendServer,
                                          backend_b: BackendServer) -> None:
    added = _admin(gateway, "POST", "/routes", json={"id": "new", "path": "/new/{id}", "target": backend.url})
    assert added.status_code == 201
    assert added.json()["version"] == 1 and added.json()["route"]["source"] == "api"
    assert httpx.get(gateway.url + "/new/5").json()["service"] == backend.name

    assert _admin(gateway, "POST", "/routes", json={"id": "new", "path": "/x", "target": backend.url}).status_code == 409

    changed = _admin(gateway, "PATCH", "/routes/new", json={"target": backend_b.url})
    assert changed.status_code == 200 and changed.json()["version"] == 2
    # A path not asked before: /new/5 may be served from the cache until its ttl, as any cached answer.
    assert httpx.get(gateway.url + "/new/6").json()["service"] == backend_b.name

    replaced = _admin(gateway, "PUT", "/routes/new", json={"id": "newer", "path": "/newer", "target": backend.url})
    assert replaced.json()["key"] == "newer"
    assert httpx.get(gateway.url + "/new/5").status_code == 404
    assert httpx.get(gateway.url + "/newer").status_code == 200
    assert _admin(gateway, "GET", "/routes/new").status_code == 404

    assert _admin(gateway, "POST", "/routes/agents/disable").json()["route"]["enabled"] is False
    assert httpx.get(gateway.url + "/api/v1/agents").status_code == 404
    assert [r["enabled"] for r in _admin(gateway, "GET", "/routes").json()["routes"] if r["key"] == "agents"] == [False]
    assert _admin(gateway, "POST", "/routes/agents/enable").status_code == 200
    assert httpx.get(gateway.url + "/api/v1/agents").status_code == 200

    key = quote("* /files/*", safe="")
    assert _admin(gateway, "GET", f"/routes/{key}").json()["route"]["strip_prefix"] is True
    assert _admin(gateway, "DELETE", f"/routes/{key}").json()["route"] is None
    assert httpx.get(gateway.url + "/files/a").status_code == 404
    assert _admin(gateway, "DELETE", f"/routes/{key}").status_code == 404

    shown = _admin(gateway, "GET", "/config").json()
    # "agents" is back as in the file and "new" was only ever the API's: neither needs an override.
    assert shown["changed_routes"] == ["* /files/*", "newer"]
    assert [r.get("id") for r in shown["config"]["router"]["routes"]] == ["agents", "newer"]

    reset = _admin(gateway, "DELETE", "/config/overrides").json()
    assert _admin(gateway, "GET", "/config").json()["version"] == reset["version"]
    assert httpx.get(gateway.url + "/files/a").status_code == 200
    assert httpx.get(gateway.url + "/newer").status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"path": "no-slash", "target": "http://h:1"}, "body.path"),
    ({"path": "/_gateway/x", "target": "http://h:1"}, "body.path"),
    ({"path": "/a", "target": "ftp://h"}, "body.target"),
    # Accepted with 201 until the one URL check (app/config.py) served the admin API too.
    ({"path": "/a", "target": "http://[::1"}, "body.target"),
    ({"path": "/a", "target": "http://a b/"}, "body.target"),
    ({"path": "/a", "target": "http://127.0.0.1:99999/"}, "body.target"),
    ({"path": "/a", "target": "http://h:0/"}, "body.target"),
    ({"path": "/a", "target": "http://user:secret@h:1/"}, "body.target"),
    ({"path": "/a", "target": "http:///x"}, "body.target"),
    ({"path": "/a", "targets": [{"url": "http://h:1"}, {"url": "http://h\tx:1"}]}, "body.targets.1.url"),
    ({"path": "/a", "target": "http://h:1", "timeout": {"read": "soon"}}, "body.timeout.read"),
    ({"path": "/a", "target": "http://h:1", "colour": "red"}, "body.colour"),
    ({"path": "/a", "method": "BREW", "target": "http://h:1"}, "body.method"),
    ({"target": "http://h:1"}, "body.path"),
    # Found by schemathesis: a number orjson (64 bits) and Lua (2^53) cannot keep was a 500.
    ({"path": "/a", "target": "http://h:1", "max_body_size": 10**30}, "body.max_body_size"),
    ({"path": "/a", "targets": [{"url": "http://h:1", "weight": 2**60}]}, "body.targets.0.weight"),
    # Found by schemathesis: an op that is not a string made the rule's validator raise TypeError.
    ({"path": "/a", "target": "http://h:1", "transform": {"response_rules": [{"field": "x", "op": {}}]}},
     "body.transform.response_rules.0.op"),
    # Valid alone, not merged with the top level's auth: (no jwt section says how to verify).
    ({"path": "/a", "target": "http://h:1", "auth": {"methods": ["jwt"]}}, "body.auth"),
    ({"path": "/a", "target": "http://h:1", "cors": {"origins": ["*"], "credentials": True}}, "body.cors"),
])
def test_bad_input_is_400_naming_the_field(gateway: GatewayThread, body: dict, field: str) -> None:
    answer = _admin(gateway, "POST", "/routes", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid input"
    assert any(f["field"].startswith(field) for f in answer.json()["fields"]), answer.json()
    patched = _admin(gateway, "PATCH", "/routes/agents", json={k: v for k, v in body.items() if k != "path"} | (
        {"path": body["path"]} if "path" in body else {"timeout": {"read": "soon"}}))
    assert patched.status_code == 400 and patched.json()["fields"]


def test_targets_with_their_health_per_route(gateway: GatewayThread, backend: BackendServer) -> None:
    route = gateway.gateway.orchestrator.router.route_manager.get("agents")
    assert route is not None
    shown = _admin(gateway, "GET", "/targets").json()
    assert shown == [{"url": backend.url, "healthy": True, "routes": [
        {"route": "agents", "weight": 100, "healthy": True}, {"route": "* /files/*", "weight": 100, "healthy": True}]}]
    route.balancer.set_healthy(backend.url, False)  # what a failing health check does
    shown = _admin(gateway, "GET", "/targets").json()
    assert shown[0]["healthy"] is False
    assert [u["healthy"] for u in shown[0]["routes"]] == [False, True]


def test_body_that_is_not_json_is_400(gateway: GatewayThread) -> None:
    answer = httpx.post(gateway.url + "/_gateway/routes", content=b"{nope",
                        headers={**AUTH, "content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid input"


def test_config_hides_secrets(backend: BackendServer) -> None:
    config = parse_config({"admin": {"token": TOKEN}, "rate_limiter": {"api_keys": [
        {"key": "k" * 32, "client_id": "c1"}]}}, {})
    with GatewayThread(config) as gateway:
        text = _admin(gateway, "GET", "/config").text
    assert TOKEN not in text and "k" * 32 not in text


def test_tokens_kept_hashed_with_a_read_or_write_role(backend: BackendServer) -> None:
    reader, writer = "reader-token-0123456789", "writer-token-0123456789"
    tokens = [{"name": "dashboard", "sha256": hashlib.sha256(reader.encode()).hexdigest(), "role": "read"},
              {"name": "deployer", "sha256": hashlib.sha256(writer.encode()).hexdigest(), "role": "write"}]
    with _gateway(backend, tokens=tokens) as gateway:
        def call(token: str, method: str, path: str, **kwargs: object) -> httpx.Response:
            return httpx.request(method, gateway.url + "/_gateway" + path,
                                 headers={"Authorization": f"Bearer {token}"}, **kwargs)  # type: ignore[arg-type]

        assert call(reader, "GET", "/routes").status_code == 200
        assert call(reader, "GET", "/status").status_code == 200
        refused = call(reader, "POST", "/routes/agents/disable")
        assert refused.status_code == 403 and refused.json() == {"error": "the admin token 'dashboard' may only read"}
        assert call(reader, "DELETE", "/routes/agents").status_code == 403
        assert httpx.get(gateway.url + "/api/v1/agents").status_code == 200  # nothing changed
        assert call(writer, "POST", "/routes/agents/disable").status_code == 200
        assert call("nobody-0123456789", "GET", "/routes").status_code == 401
        shown = call(writer, "GET", "/config").text
        assert reader not in shown and writer not in shown


def test_admin_token_names_are_unique() -> None:
    digest = "0" * 64
    with pytest.raises(ConfigError, match="each admin token needs a name of its own"):
        parse_config({"admin": {"token": "t" * 20, "tokens": [{"name": "admin", "sha256": digest}]}}, {})
    with pytest.raises(ConfigError, match="admin.tokens.0.sha256"):
        parse_config({"admin": {"tokens": [{"name": "x", "sha256": "not-hex"}]}}, {})
