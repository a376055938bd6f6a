"""The admin API's audit log on a running gateway, on the memory store and on a real Redis: who
changed what, before and after, in a capped stream and in the log; GET /_gateway/audit; the status
page's latest changes."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
import redis
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from app.config import GatewayConfig, parse_config
from app.control.admin.auth import Admin
from app.control.audit import AdminAudit, Audited, AuditRecorder
from app.store import MemoryStore, StoreUnavailable
from tests.support import BackendServer, GatewayThread

WRITER, READER, ADMIN = "deployer-token-0123456789", "dashboard-token-0123456789", "admin-token-0123456789"
TOKENS = [{"name": "deployer", "role": "write", "sha256": hashlib.sha256(WRITER.encode()).hexdigest()},
          {"name": "dashboard", "role": "read", "sha256": hashlib.sha256(READER.encode()).hexdigest()}]
KEEP = 4


def _config(backend: BackendServer, redis_section: dict[str, Any] | None, keep: int = KEEP) -> GatewayConfig:
    raw: dict[str, Any] = {
        "admin": {"token": ADMIN, "tokens": TOKENS, "audit_max_records": keep},
        "router": {"routes": [{"id": "agents", "path": "/api/v1/agents", "target": backend.url}]},
    }
    if redis_section is not None:
        raw["redis"] = redis_section
    return parse_config(raw, {})


@pytest.fixture(params=["memory", "redis"])
def redis_section(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[dict[str, Any] | None]:
    if request.param == "memory":
        yield None
        return
    request.getfixturevalue("redis_client")  # removes the test's keys afterwards
    yield {"url": request.getfixturevalue("redis_url"), "prefix": key_prefix}


@pytest.fixture
def gateway(backend: BackendServer, redis_section: dict[str, Any] | None) -> Iterator[GatewayThread]:
    with GatewayThread(_config(backend, redis_section)) as server:
        yield server


def call(gateway: GatewayThread, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{gateway.url}/_gateway{path}", headers={"Authorization": f"Bearer {token}"},
                         **kwargs)


def records(gateway: GatewayThread, limit: int = 100, token: str = READER) -> list[dict[str, Any]]:
    answer = call(gateway, token, "GET", f"/audit?limit={limit}")
    assert answer.status_code == 200, answer.text
    return answer.json()["records"]


def _logged(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "apigw.audit" and r.levelno == logging.INFO]


def test_a_change_by_a_write_token_is_recorded_with_who_before_and_after(
        gateway: GatewayThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="apigw.audit")
    changed = call(gateway, WRITER, "PATCH", "/routes/agents", json={"timeout": {"read": 3}})
    assert changed.status_code == 200, changed.text
    [record] = records(gateway)  # listed at once: written before the answer went out
    assert record["who"] == {"name": "deployer", "role": "write"}
    assert (record["action"], record["target"], record["method"], record["path"]) == \
        ("route.update", "agents", "PATCH", "/_gateway/routes/agents")
    assert "timeout" not in record["before"] and record["before"]["path"] == "/api/v1/agents"
    assert record["after"]["timeout"] == {"read": 3.0}
    assert (record["outcome"], record["status"], record["address"]) == ("ok", 200, "127.0.0.1")
    assert record["time"].endswith("Z") and record["id"].split("-")[0].isdigit()
    # The same record is one JSON log line.
    assert _logged(caplog) == [record]
    # Who is the token's name, never the token nor its digest.
    shown = json.dumps(record) + caplog.text
    for secret in (WRITER, READER, ADMIN, TOKENS[0]["sha256"], TOKENS[1]["sha256"]):
        assert secret not in shown


def test_a_read_token_lists_but_cannot_change(gateway: GatewayThread) -> None:
    assert call(gateway, READER, "PATCH", "/routes/agents", json={"timeout": {"read": 3}}).status_code == 403
    assert call(gateway, READER, "POST", "/routes/agents/disable").status_code == 403
    assert call(gateway, READER, "POST", "/circuits/agents/open").status_code == 403
    assert records(gateway) == []  # refused: nothing changed, nothing recorded
    assert call(gateway, READER, "GET", "/routes/agents").json()["route"].get("timeout") is None
    assert call(gateway, "wrong-token-0123456789", "GET", "/audit").status_code == 401
    assert httpx.get(gateway.url + "/_gateway/audit").status_code == 401


def test_the_stream_stays_capped_newest_first(gateway: GatewayThread, redis_section: dict[str, Any] | None,
                                              redis_url: str) -> None:
    for read in range(1, 8):
        assert call(gateway, ADMIN, "PATCH", "/routes/agents", json={"timeout": {"read": read}}).status_code == 200
    kept = records(gateway)
    assert [r["after"]["timeout"]["read"] for r in kept] == [7.0, 6.0, 5.0, 4.0]
    assert [r["who"]["name"] for r in kept] == ["admin"] * KEEP
    assert [r["after"]["timeout"]["read"] for r in records(gateway, limit=2)] == [7.0, 6.0]
    ids = [tuple(int(p) for p in r["id"].split("-")) for r in kept]
    assert ids == sorted(ids, reverse=True)
    if redis_section is not None:
        client = redis.Redis.from_url(redis_url)
        assert client.xlen(f"{redis_section['prefix']}:audit:{{admin}}") == KEEP
        client.close()


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "x"])
def test_a_bad_limit_is_400(gateway: GatewayThread, limit: str) -> None:
    answer = call(gateway, READER, "GET", f"/audit?limit={limit}")
    assert answer.status_code == 400 and answer.json()["fields"][0]["field"] == "query.limit"


def test_a_refused_change_is_logged_not_kept(gateway: GatewayThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="apigw.audit")
    assert call(gateway, WRITER, "PATCH", "/routes/agents", json={"timeout": {"read": "soon"}}).status_code == 400
    assert call(gateway, WRITER, "DELETE", "/routes/nothing-here").status_code == 404
    assert call(gateway, WRITER, "POST", "/routes", json={"id": "agents", "path": "/x",
                                                         "target": "http://127.0.0.1:9"}).status_code == 409
    assert call(gateway, READER, "DELETE", "/routes/agents").status_code == 403
    assert records(gateway) == []
    logged = _logged(caplog)
    assert [(r["outcome"], r["status"], r["who"]["name"], r["action"]) for r in logged] == [
        # Bad input never reaches the handler: named by its method and path.
        ("refused", 400, "deployer", "PATCH /_gateway/routes/agents"), ("refused", 404, "deployer", "route.delete"),
        ("refused", 409, "deployer", "route.create"), ("refused", 403, "dashboard", "DELETE /_gateway/routes/agents")]
    assert all(r["id"] == "" and r["after"] is None for r in logged)


def test_records_are_shared_by_the_fleet_and_survive_a_restart(backend: BackendServer, redis_url: str,
                                                                key_prefix: str, redis_client: redis.Redis) -> None:
    config = _config(backend, {"url": redis_url, "prefix": key_prefix})
    with GatewayThread(config) as first, GatewayThread(config) as second:
        assert call(first, WRITER, "POST", "/routes/agents/disable").status_code == 200
        assert [r["action"] for r in records(second)] == ["route.disable"]
        assert records(second)[0]["replica"] == records(first)[0]["replica"]  # one record, whoever lists it
    with GatewayThread(config) as restarted:
        [record] = records(restarted)
        assert (record["action"], record["who"]["name"], record["before"].get("enabled"),
                record["after"]["enabled"]) == ("route.disable", "deployer", None, False)
        assert call(restarted, ADMIN, "POST", "/routes/agents/enable").status_code == 200
        assert [r["action"] for r in records(restarted)] == ["route.enable", "route.disable"]


# -- every change endpoint ----------------------------------------------------------------------

# (method, path template, body, the action recorded, the target recorded)
CHANGES: list[tuple[str, str, Any, str, str]] = [
    ("POST", "/routes", {"id": "users", "path": "/users", "target": "http://127.0.0.1:9"}, "route.create", "users"),
    ("PUT", "/routes/users", {"id": "users", "path": "/people", "target": "http://127.0.0.1:9"},
     "route.replace", "users"),
    ("PATCH", "/routes/users", {"timeout": {"read": 2}}, "route.update", "users"),
    ("POST", "/routes/users/disable", None, "route.disable", "users"),
    ("POST", "/routes/users/enable", None, "route.enable", "users"),
    ("DELETE", "/routes/users", None, "route.delete", "users"),
    ("POST", "/routes/agents/disable", None, "route.disable", "agents"),
    ("DELETE", "/config/overrides", None, "config.reset_overrides", "routes"),
    ("PUT", "/clients/alice/limits", {"requests_per_minute": 5}, "client.limits.set", "alice"),
    ("DELETE", "/clients/alice/limits", None, "client.limits.remove", "alice"),
    ("POST", "/clients/alice/reset", None, "client.reset", "alice"),
    ("POST", "/api-keys", {"client_id": "bob", "roles": ["reader"]}, "api_key.create", "<hash>"),
    ("DELETE", "/api-keys/<hash>", None, "api_key.revoke", "<hash>"),
    ("POST", "/circuits/agents/open", {"seconds": 30}, "circuit.open", "agents"),
    ("POST", "/circuits/agents/close", None, "circuit.close", "agents"),
    ("POST", "/circuits/agents/reset", None, "circuit.reset", "agents"),
    ("POST", "/cache/invalidate", {"pattern": "/api/v1"}, "cache.invalidate", "/api/v1"),
]


def test_every_change_endpoint_records_what_it_did(backend: BackendServer) -> None:
    with GatewayThread(_config(backend, None, keep=100)) as gateway:
        # Every call of the admin API that is not a read is in CHANGES: a new one needs its line here.
        schema = httpx.get(gateway.url + "/_gateway/openapi.json").json()
        writes = {(method.upper(), path.removeprefix("/_gateway")) for path, operations in schema["paths"].items()
                  for method in operations if method not in ("get", "head")}
        templates = {"/routes": "/routes", "/routes/{key}": "/routes/users", "/routes/{key}/disable":
                     "/routes/users/disable", "/routes/{key}/enable": "/routes/users/enable",
                     "/clients/{client_id}/limits": "/clients/alice/limits",
                     "/clients/{client_id}/reset": "/clients/alice/reset", "/api-keys/{digest}": "/api-keys/<hash>",
                     "/circuits/{name}/open": "/circuits/agents/open", "/circuits/{name}/close":
                     "/circuits/agents/close", "/circuits/{name}/reset": "/circuits/agents/reset"}
        assert {(m, templates.get(p, p)) for m, p in writes} <= {(m, p) for m, p, *_ in CHANGES} | \
            {("POST", "/routes/users/disable"), ("POST", "/routes/users/enable"),
             # Needs a gateway started from a file: test_config_reload.py checks its record.
             ("POST", "/config/reload")}, writes

        digest = key = ""
        for method, path, body, _, _ in CHANGES:
            answer = call(gateway, ADMIN, method, path.replace("<hash>", digest), json=body)
            assert answer.status_code < 300, (method, path, answer.text)
            if path == "/api-keys":
                key, digest = answer.json()["key"], answer.json()["hash"]
        kept = list(reversed(records(gateway)))
        assert [(r["action"], r["target"], r["outcome"]) for r in kept] == [
            (action, target.replace("<hash>", digest), "ok") for *_, action, target in CHANGES]
        by_action = {r["action"]: r for r in kept}
        assert by_action["route.create"]["before"] is None and by_action["route.create"]["after"]["path"] == "/users"
        assert by_action["route.replace"]["before"]["path"] == "/users"
        assert by_action["route.replace"]["after"]["path"] == "/people"
        assert by_action["route.delete"]["before"]["path"] == "/people" and by_action["route.delete"]["after"] is None
        assert by_action["config.reset_overrides"]["before"] == {"agents": {
            "id": "agents", "path": "/api/v1/agents", "targets": [{"url": backend.url}], "enabled": False}}
        assert by_action["client.limits.set"]["before"]["source"] == "default"
        assert by_action["client.limits.set"]["after"]["config"] == {"requests_per_minute": 5}
        assert by_action["client.limits.remove"]["after"]["source"] == "default"
        assert by_action["api_key.create"]["after"] == {"hash": digest, "client_id": "bob", "tier": None,
                                                        "roles": ["reader"]}
        assert by_action["api_key.revoke"]["before"]["client_id"] == "bob"
        assert (by_action["circuit.open"]["before"]["state"], by_action["circuit.open"]["after"]["state"]) == \
            ("closed", "open")
        assert by_action["circuit.close"]["after"]["state"] == "closed"
        assert by_action["cache.invalidate"]["after"] == {"removed": 0}
        assert key not in json.dumps(kept)  # the new API key itself is shown once, to its caller only

        # The status page's JSON shows the latest few, newest first.
        status = call(gateway, ADMIN, "GET", "/status").json()["audit"]
        assert status["available"] is True
        assert [r["action"] for r in status["items"]] == [r["action"] for r in reversed(kept)][:5]


# -- a change that fails inside the gateway ------------------------------------------------------

class _DownStore(MemoryStore):
    async def xadd(self, key: str, fields: Mapping[str, bytes | str], maxlen: int) -> bytes:
        raise StoreUnavailable("redis unreachable: test")


def _failing_app(audit: AdminAudit) -> FastAPI:
    """A control app whose change handlers fail after accepting the change, behind the recorder."""
    async def holder(request: Request) -> None:
        request.state.admin = Admin("ops", "write")

    api = FastAPI(dependencies=[Depends(holder)])

    @api.exception_handler(StoreUnavailable)
    async def store_down(_: Request, error: StoreUnavailable) -> JSONResponse:
        return JSONResponse({"error": "store unavailable"}, status_code=503)

    @api.post("/store-down")
    async def store_down_change(change: Audited) -> None:
        change.describe("thing.change", "thing").before = {"n": 1}
        raise StoreUnavailable("gone mid-change")

    @api.post("/bug")
    async def bug(change: Audited) -> None:
        change.describe("thing.break", "thing")
        raise RuntimeError("a bug")

    api.add_middleware(AuditRecorder, audit=audit)
    return api


async def test_a_change_that_failed_inside_the_gateway_is_recorded_as_an_error(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="apigw.audit")
    audit = AdminAudit(MemoryStore(), 10, "here:1")
    transport = httpx.ASGITransport(_failing_app(audit), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        assert (await client.post("/store-down")).status_code == 503
        assert (await client.post("/bug")).status_code == 500
    kept = await audit.latest(10)
    assert [(r.action, r.outcome, r.status, r.who.name, r.before) for r in kept] == [
        ("thing.break", "error", 500, "ops", None), ("thing.change", "error", 503, "ops", {"n": 1})]
    assert [r["action"] for r in _logged(caplog)] == ["thing.change", "thing.break"]

    # The stream cannot be written: the record is still in the log, and an error says why.
    caplog.clear()
    transport = httpx.ASGITransport(_failing_app(AdminAudit(_DownStore(), 10, "here:1")), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        assert (await client.post("/store-down")).status_code == 503
    assert [(r["action"], r["id"]) for r in _logged(caplog)] == [("thing.change", "")]
    assert any(r.levelno == logging.ERROR and "could not be stored" in r.getMessage() for r in caplog.records)
