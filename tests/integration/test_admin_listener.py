"""``admin.listen``: the admin API and the status page on a listener of their own, and the data port
keeping only health and readiness (and metrics when asked). Real sockets, in-process and as the
``python -m app serve`` process."""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest

from app.config import parse_config
from tests.support import BackendServer, GatewayProcess, GatewayThread, free_port

TOKEN = "admin-listener-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _config(backend: BackendServer, admin_port: int, **admin: Any) -> dict[str, Any]:
    return {"admin": {"token": TOKEN, "listen": {"host": "127.0.0.1", "port": admin_port}, **admin},
            "router": {"routes": [{"path": "/api/*", "target": backend.url}]}}


def test_the_admin_api_and_status_page_move_to_their_own_listener(backend: BackendServer) -> None:
    with GatewayThread(parse_config(_config(backend, free_port()), {})) as gateway, \
            httpx.Client(base_url=gateway.url) as data, httpx.Client(base_url=gateway.admin_url) as admin:
        # The data port: the proxy, health and readiness; nothing else of /_gateway/.
        assert data.get("/api/x").status_code == 200
        assert data.get("/_gateway/health").json()["status"] == "ok"
        assert data.get("/_gateway/ready").status_code == 200
        for path in ("/_gateway/routes", "/_gateway/", "/_gateway", "/_gateway/status", "/_gateway/metrics",
                     "/_gateway/openapi.json", "/_gateway/ratelimits/clients/x"):
            answer = data.get(path, headers=AUTH)
            assert answer.status_code == 404, path
            assert answer.json() == {"error": "not found"}
        assert data.post("/_gateway/routes", headers=AUTH,
                         json={"path": "/b/*", "target": backend.url}).status_code == 404
        assert sum(backend.hits.values()) == 1  # only /api/x reached it
        # The admin port: the whole control plane, and no proxying.
        assert [r["key"] for r in admin.get("/_gateway/routes", headers=AUTH).json()["routes"]] == ["* /api/*"]
        assert admin.get("/_gateway/routes").status_code == 401
        assert "<html" in admin.get("/_gateway/").text.lower()
        assert "apigw_requests_total" in admin.get("/_gateway/metrics").text
        assert admin.get("/_gateway/health").status_code == 200
        assert admin.get("/api/x").status_code == 404
        assert sum(backend.hits.values()) == 1
        # A route added through the admin port is served on the data port.
        assert admin.post("/_gateway/routes", headers=AUTH,
                          json={"path": "/b/*", "target": backend.url}).status_code == 201
        assert data.get("/b/y").status_code == 200


def test_metrics_on_the_data_port_when_asked(backend: BackendServer) -> None:
    config = parse_config(_config(backend, free_port(), metrics_on_data_port=True), {})
    with GatewayThread(config) as gateway, httpx.Client(base_url=gateway.url) as data:
        assert "apigw_requests_total" in data.get("/_gateway/metrics").text
        assert data.get("/_gateway/routes", headers=AUTH).status_code == 404


def test_serve_runs_both_listeners_and_stops_on_a_signal(backend: BackendServer) -> None:
    admin_port = free_port()
    gateway = GatewayProcess(_config(backend, admin_port)).start()
    try:
        assert httpx.get(f"{gateway.url}/_gateway/routes", headers=AUTH).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{admin_port}/_gateway/routes", headers=AUTH).status_code == 200
        assert httpx.get(f"{gateway.url}/api/x").status_code == 200
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(timeout=10) in (0, -signal.SIGTERM), gateway.log()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{admin_port}/_gateway/health")
    finally:
        gateway.stop()
