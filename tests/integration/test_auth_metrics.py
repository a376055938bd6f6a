"""apigw_auth_total on a running gateway: each authentication on a route with auth counted by route,
method and outcome (ok, missing, invalid, forbidden), as /_gateway/metrics serves it; a method token
the client chose cannot make new series."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import parse_config
from tests.support import BackendServer, GatewayThread

ADMIN_KEY, READER_KEY = "k-admin-0123456789abcdef", "k-reader-0123456789abcdef"


@pytest.fixture
def route() -> str:
    return f"guarded-{uuid.uuid4().hex[:8]}"  # the registry is the process's: a route of this test's own


@pytest.fixture
def gateway(backend: BackendServer, route: str) -> Iterator[GatewayThread]:
    with GatewayThread(parse_config({
        "auth": {"methods": ["api_key"], "abuse": {"enabled": False}},
        "rate_limiter": {"api_keys": [{"key": ADMIN_KEY, "client_id": "ops", "roles": ["admin"]},
                                      {"key": READER_KEY, "client_id": "acme", "roles": ["reader"]}]},
        "cache": {"enabled": False},
        "router": {"routes": [
            {"id": route, "path": "/admin-api/*", "target": backend.url, "auth": {"allow_roles": ["admin"]}},
            {"id": route + "-open", "path": "/open/*", "target": backend.url, "auth": {"methods": []}},
        ]},
    }, {})) as server:
        yield server


def _counts(gateway: GatewayThread, route: str) -> dict[tuple[str, str], float]:
    text = httpx.get(gateway.url + "/_gateway/metrics").text
    return {(s.labels["method"], s.labels["outcome"]): s.value
            for family in text_string_to_metric_families(text) if family.name == "apigw_auth"
            for s in family.samples if s.name == "apigw_auth_total" and s.labels["route"] == route}


def test_each_authentication_is_counted_by_route_method_and_outcome(gateway: GatewayThread, route: str) -> None:
    def call(method: str, key: str | None, status: int) -> None:
        headers = {"X-API-Key": key} if key is not None else {}
        assert httpx.request(method, gateway.url + "/admin-api/x", headers=headers).status_code == status

    call("GET", ADMIN_KEY, 200)
    call("GET", ADMIN_KEY, 200)
    call("POST", ADMIN_KEY, 200)
    call("GET", None, 401)
    call("GET", "k-nobody-0123456789abcdef", 401)
    call("DELETE", READER_KEY, 403)
    assert httpx.get(gateway.url + "/open/x").status_code == 200  # no auth there: nothing counted
    assert _counts(gateway, route) == {("GET", "ok"): 2, ("POST", "ok"): 1, ("GET", "missing"): 1,
                                       ("GET", "invalid"): 1, ("DELETE", "forbidden"): 1}
    assert _counts(gateway, route + "-open") == {}


# Methods the HTTP parser knows (it refuses tokens it does not) that a route of any method takes.
@pytest.mark.parametrize("method", ["PROPFIND", "MKCOL", "PURGE", "SEARCH", "REPORT"])
def test_a_method_outside_the_usual_ones_is_counted_as_other(gateway: GatewayThread, route: str,
                                                              method: str) -> None:
    assert httpx.request(method, gateway.url + "/admin-api/x").status_code == 401
    httpx.request(method, gateway.url + "/admin-api/x", headers={"X-API-Key": ADMIN_KEY})
    assert _counts(gateway, route) == {("other", "missing"): 1, ("other", "ok"): 1}
