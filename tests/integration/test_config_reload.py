"""Reloading the config file without a restart: SIGHUP and ``POST /_gateway/config/reload`` on a real
``python -m app serve --config FILE`` process, its file rewritten between the calls."""

from __future__ import annotations

import concurrent.futures
import hashlib
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.support import BackendServer, GatewayProcess, free_port, wait_for

TOKEN = "reload-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READ_TOKEN = "reload-test-read-token-0123"


def _route(path: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"path": path, "target": target, "strip_prefix": True, "cache": {"enabled": False}, **extra}


def _config(*routes: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {
        "admin": {"token": TOKEN, "tokens": [{"name": "viewer", "role": "read",
                                              "sha256": hashlib.sha256(READ_TOKEN.encode()).hexdigest()}]},
        "router": {"routes": list(routes)},
        # The test names its clients with X-Client-ID.
        "rate_limiter": {"client_id_trusted_from": ["127.0.0.0/8"]},
        **sections,
    }


@pytest.fixture()
def beta() -> Iterator[BackendServer]:
    with BackendServer("beta") as server:
        yield server


@pytest.fixture()
def alpha() -> Iterator[BackendServer]:
    with BackendServer("alpha") as server:
        yield server


def _rewrite(gateway: GatewayProcess, config: dict[str, Any]) -> None:
    gateway.config_path.write_text(yaml.safe_dump(config))


def _sighup(gateway: GatewayProcess) -> None:
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGHUP)


def _statuses(client: httpx.Client, path: str, client_id: str, n: int) -> list[int]:
    return [client.get(path, headers={"X-Client-ID": client_id}).status_code for _ in range(n)]


def test_sighup_serves_the_new_routes_and_limits_at_once(alpha: BackendServer) -> None:
    first = _config(_route("/old/*", alpha.url), _route("/limited/*", alpha.url, rate_limit={"requests_per_minute": 50}))
    with GatewayProcess(first) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as client:
        assert client.get("/old/x").status_code == 200
        assert client.get("/new/x").status_code == 404
        assert _statuses(client, "/limited/x", "carol", 3) == [200, 200, 200]

        _rewrite(gateway, _config(_route("/new/*", alpha.url),
                                  _route("/limited/*", alpha.url, rate_limit={"requests_per_minute": 2})))
        _sighup(gateway)
        wait_for(lambda: client.get("/new/x").status_code == 200, what="the new route")

        assert client.get("/old/x").status_code == 404
        assert client.get("/old/x").json()["error"] == "no route"
        # The route's new limit: 2 a minute for a client not seen before, then 429.
        assert _statuses(client, "/limited/x", "dave", 3) == [200, 200, 429]
        # The process never stopped: the same pid answers, and the log says what happened.
        assert gateway.proc is not None and gateway.proc.poll() is None
        assert "config reload (SIGHUP)" in gateway.log()
        assert alpha.hits.get("/x", 0) >= 3


def test_the_admin_api_reloads_and_reports_restart_only_settings(alpha: BackendServer) -> None:
    with GatewayProcess(_config(_route("/a/*", alpha.url))) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=10) as client:
        changed = _config(_route("/b/*", alpha.url),
                          server={"port": free_port(), "limits": {"max_fields": 50}},
                          redis={"prefix": "elsewhere"},
                          admin={"token": TOKEN, "listen": {"host": "127.0.0.1", "port": free_port()}})
        _rewrite(gateway, changed)

        # A read token may look, not reload; no token at all is 401.
        assert client.post("/_gateway/config/reload").status_code == 401
        refused = client.post("/_gateway/config/reload", headers={"Authorization": f"Bearer {READ_TOKEN}"})
        assert refused.status_code == 403
        assert client.get("/a/x").status_code == 200  # nothing applied

        answer = client.post("/_gateway/config/reload", headers=AUTH)
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert report["applied"] is True
        assert report["version"] == 2
        assert report["source"] == str(gateway.config_path)
        assert sorted(report["not_applied"]) == ["admin.listen", "redis", "server.limits", "server.port"]
        assert "need a restart were not applied: server.port" in gateway.log()
        # The routes moved; the port, the listeners and the store did not.
        assert client.get("/b/x").status_code == 200
        assert client.get("/a/x").status_code == 404
        # The admin API still on the data port (admin.listen not applied), its token unchanged.
        effective = client.get("/_gateway/config", headers=AUTH).json()["config"]
        assert effective["redis"]["prefix"] == "apigw"
        assert effective["server"]["limits"]["max_fields"] == 100
        assert effective["admin"]["listen"] is None
        assert [r["path"] for r in effective["router"]["routes"]] == ["/b/*"]
        # In the audit log: who reloaded, and what it applied.
        record = client.get("/_gateway/audit", headers=AUTH).json()["records"][0]
        assert (record["action"], record["target"], record["before"], record["after"]["version"]) == \
            ("config.reload", str(gateway.config_path), {"version": 1}, 2)
        assert record["after"]["not_applied"] == report["not_applied"]


def test_an_invalid_file_changes_nothing_and_names_the_field(alpha: BackendServer) -> None:
    good = _config(_route("/a/*", alpha.url, timeout={"read": 5}))
    with GatewayProcess(good) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as client:
        bad = _config(_route("/a/*", alpha.url, timeout={"read": -1}), _route("/b/*", alpha.url))
        _rewrite(gateway, bad)

        answer = client.post("/_gateway/config/reload", headers=AUTH)
        assert answer.status_code == 400
        assert answer.headers["content-type"] == "application/json"
        report = answer.json()
        assert report["applied"] is False
        assert report["version"] == 1
        assert [f["field"] for f in report["fields"]] == ["router.routes.0.timeout.read"]
        assert "greater than 0" in report["fields"][0]["reason"]
        assert "router.routes.0.timeout.read" in report["error"]
        # The running config stays: /a/* served as before, the valid part of the file (/b/*) not applied.
        assert client.get("/a/x").status_code == 200
        assert client.get("/b/x").status_code == 404

        # The same on SIGHUP: the log names the field and the process serves on.
        _sighup(gateway)
        wait_for(lambda: "config reload (SIGHUP) refused" in gateway.log(), what="the refused reload in the log")
        assert "router.routes.0.timeout.read" in gateway.log().split("config reload (SIGHUP) refused", 1)[1]
        assert client.get("/a/x").status_code == 200
        assert client.get("/b/x").status_code == 404

        # Hostile files: not YAML, not a mapping, an unknown key; each refused, nothing applied.
        for text, field in (("router: [unclosed", None), ("- a list\n", None),
                            (yaml.safe_dump({**good, "routerr": {}}), "routerr")):
            gateway.config_path.write_text(text)
            answer = client.post("/_gateway/config/reload", headers=AUTH)
            assert answer.status_code == 400, text
            assert answer.json()["applied"] is False
            assert [f["field"] for f in answer.json()["fields"]] == ([field] if field else [])
            assert client.get("/a/x").status_code == 200
        gateway.config_path.unlink()
        answer = client.post("/_gateway/config/reload", headers=AUTH)
        assert answer.status_code == 400 and "no such file" in answer.json()["error"]
        assert client.get("/a/x").status_code == 200


def test_a_request_in_flight_finishes_on_the_config_it_started_with(alpha: BackendServer, beta: BackendServer) -> None:
    with GatewayProcess(_config(_route("/svc/*", alpha.url, timeout={"read": 10}))) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=20) as client, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.get, "/svc/slow", params={"seconds": "1.5"})
        wait_for(lambda: alpha.hits.get("/slow", 0) == 1, what="the slow request at the backend")

        # The route now goes to beta with a read timeout far shorter than the slow answer.
        _rewrite(gateway, _config(_route("/svc/*", beta.url, timeout={"read": 0.2})))
        assert client.post("/_gateway/config/reload", headers=AUTH).json()["applied"] is True
        assert client.get("/svc/x").json()["service"] == "beta"

        answer = slow.result(timeout=15)
        # Old config: alpha's answer, not cut by the new 0.2 s timeout.
        assert answer.status_code == 200
        assert answer.json() == {"service": "alpha", "slow": True}
        # New config, for a request that starts now: beta, and its 0.2 s read timeout.
        assert client.get("/svc/slow", params={"seconds": "1"}).status_code == 504
        assert beta.hits.get("/slow", 0) == 1


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_routes_changed_through_the_admin_api_apply_over_the_reloaded_file(
        store: str, alpha: BackendServer, beta: BackendServer, request: pytest.FixtureRequest) -> None:
    redis = {}
    if store == "redis":
        redis = {"redis": {"url": request.getfixturevalue("redis_url"),
                           "prefix": request.getfixturevalue("key_prefix")}}
    with GatewayProcess(_config(_route("/a/*", alpha.url), _route("/gone/*", alpha.url), **redis)) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=10) as client:
        added = client.post("/_gateway/routes", headers=AUTH, json=_route("/api/*", beta.url))
        assert added.status_code == 201, added.text
        # The API points the file's /a/* at beta.
        key = "*%20/a/*"
        assert client.put(f"/_gateway/routes/{key}", headers=AUTH,
                          json=_route("/a/*", beta.url)).status_code == 200
        assert client.get("/a/x").json()["service"] == "beta"

        _rewrite(gateway, _config(_route("/a/*", alpha.url, timeout={"read": 3}), _route("/b/*", alpha.url),
                                  _route("/limited/*", alpha.url, rate_limit={"requests_per_minute": 1}), **redis))
        report = client.post("/_gateway/config/reload", headers=AUTH).json()
        assert report["applied"] is True and report["not_applied"] == []

        assert client.get("/b/x").json()["service"] == "alpha"  # the file's new route
        assert client.get("/gone/x").status_code == 404  # the file's removed route
        assert client.get("/api/x").json()["service"] == "beta"  # added through the API: kept
        assert client.get("/a/x").json()["service"] == "beta"  # changed through the API: still wins
        assert _statuses(client, "/limited/x", "erin", 2) == [200, 429]  # the new file's limit, in the store
        listed = {r["key"]: r["source"] for r in client.get("/_gateway/routes", headers=AUTH).json()["routes"]}
        assert listed == {"* /a/*": "api", "* /b/*": "config", "* /limited/*": "config", "* /api/*": "api"}

        # A change through the API after the reload reaches the new routes (the sync follows them).
        assert client.delete("/_gateway/routes/*%20/b/*", headers=AUTH).status_code == 200
        assert client.get("/b/x").status_code == 404
