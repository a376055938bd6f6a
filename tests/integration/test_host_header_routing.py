"""Routes chosen by host and header fields as well as path and method, over real sockets: a gateway
under uvicorn and demo backends that say which one answered.

The precedence (app/routing/router.py): host, then path specificity, then header conditions, then
method.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.config import parse_config
from tests.support import BackendServer, GatewayThread


@pytest.fixture
def backends() -> Iterator[dict[str, BackendServer]]:
    names = ("default", "api", "tenant", "deep", "canary", "debug", "posts")
    servers = {name: BackendServer(name).start() for name in names}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def gateway(backends: dict[str, BackendServer]) -> Iterator[GatewayThread]:
    url = {name: server.url for name, server in backends.items()}
    off = {"enabled": False}
    routes: list[dict[str, Any]] = [
        {"path": "/*", "target": url["default"], "cache": off},
        {"path": "/v/*", "target": url["default"], "cache": off},
        # Host: an exact name, and every name below a domain.
        {"path": "/*", "host": "api.example.com", "target": url["api"], "cache": off},
        {"path": "/*", "host": "*.tenants.example.com", "target": url["tenant"], "cache": off},
        # Path specificity within a host beats a header condition on a shorter path.
        {"path": "/v/deep/*", "target": url["deep"], "cache": off},
        # Header conditions: a value, and mere presence; more conditions first.
        {"path": "/v/*", "headers": {"X-Canary": "1"}, "target": url["canary"], "cache": off},
        {"path": "/v/*", "headers": {"X-Canary": "1", "X-Debug": True}, "target": url["debug"], "cache": off},
        # Method last: a header route for any method beats a plain route for POST.
        {"path": "/v/*", "method": "POST", "target": url["posts"], "cache": off},
        # A cached route on a wildcard host: one host's answer never served for another.
        {"id": "tenant-cache", "path": "/cached/*", "host": "*.tenants.example.com", "target": url["tenant"],
         "strip_prefix": True, "cache": {"enabled": True, "ttl": 60}},
    ]
    with GatewayThread(parse_config({"router": {"routes": routes}, "cache": {"enabled": True}}, {})) as server:
        yield server


def _service(gateway: GatewayThread, path: str, method: str = "GET", **headers: str) -> str:
    response = httpx.request(method, gateway.url + path, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["service"]


def test_a_route_for_the_host_comes_first(gateway: GatewayThread) -> None:
    assert _service(gateway, "/x") == "default"  # Host: 127.0.0.1:port
    assert _service(gateway, "/x", Host="api.example.com") == "api"
    assert _service(gateway, "/x", Host="API.Example.com:8443") == "api"  # case and port do not matter
    assert _service(gateway, "/x", Host="a.tenants.example.com") == "tenant"
    assert _service(gateway, "/x", Host="b.c.tenants.example.com") == "tenant"
    assert _service(gateway, "/x", Host="tenants.example.com") == "default"  # the wildcard needs a label
    assert _service(gateway, "/x", Host="other.example.com") == "default"
    # The host's table comes before path specificity: api's /* beats the host-less /v/deep/*.
    assert _service(gateway, "/v/deep/1", Host="api.example.com") == "api"


def test_path_specificity_then_header_conditions_then_method(gateway: GatewayThread) -> None:
    assert _service(gateway, "/v/1") == "default"
    assert _service(gateway, "/v/1", **{"X-Canary": "1"}) == "canary"
    assert _service(gateway, "/v/1", **{"X-Canary": "2"}) == "default"  # a value must be equal
    assert _service(gateway, "/v/1", **{"X-Canary": "1", "X-Debug": ""}) == "debug"  # present, any value
    assert _service(gateway, "/v/1", **{"X-Debug": "yes"}) == "default"  # both conditions must hold
    # A longer path beats a header condition.
    assert _service(gateway, "/v/deep/1", **{"X-Canary": "1"}) == "deep"
    # Header conditions beat the method.
    assert _service(gateway, "/v/1", "POST") == "posts"
    assert _service(gateway, "/v/1", "POST", **{"X-Canary": "1"}) == "canary"


def test_one_hosts_cached_answer_is_never_served_for_another(gateway: GatewayThread,
                                                             backends: dict[str, BackendServer]) -> None:
    def get(host: str) -> httpx.Response:
        return httpx.get(gateway.url + "/cached/headers", headers={"Host": host}, timeout=10)

    first = get("a.tenants.example.com")
    assert first.headers["x-cache"] == "MISS"
    assert get("a.tenants.example.com").headers["x-cache"] == "HIT"
    other = get("b.tenants.example.com")
    assert other.headers["x-cache"] == "MISS"
    assert other.json()["headers"]["X-Forwarded-Host"] == "b.tenants.example.com"
    assert other.json()["n"] == first.json()["n"] + 1
    assert backends["tenant"].hits["/headers"] == 2


def test_a_table_without_conditions_never_reads_the_request() -> None:
    """The hot path: with no host or header route, matching asks nothing of the request."""
    from app.routing.router import ApiGatewayRouter

    class Untouchable:
        def header(self, name: bytes) -> bytes | None:
            raise AssertionError(f"read {name!r}")

    router: ApiGatewayRouter[Any] = ApiGatewayRouter()
    router.add_route(path="/a/*", target="http://a")
    found = router.match("/a/b", "GET", Untouchable())
    assert found is not None and found.route.path == "/a/*"
