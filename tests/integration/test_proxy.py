"""The data plane against real backends: forwarding, headers, failures, limits, streaming."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from app.config import parse_config
from tests.support import BackendServer, GatewayThread, free_port


def _gateway(routes: list[dict], **sections: object) -> GatewayThread:
    return GatewayThread(parse_config({"router": {"routes": routes}, **sections}, {}))


@pytest.fixture
def gateway(backend: BackendServer) -> Iterator[GatewayThread]:
    routes = [
        {"path": "/api/v1/agents", "method": "GET", "target": backend.url},
        {"path": "/api/v1/agents/{id}", "method": ["GET", "PUT", "POST"], "target": backend.url},
        {"path": "/files/*", "target": backend.url, "strip_prefix": True},
        {"path": "/echo/*", "target": backend.url, "max_body_size": 1000},
        {"path": "/slow", "target": backend.url, "timeout": {"read": 0.3}},
    ]
    with _gateway(routes) as server:
        yield server


def test_forwards_method_path_query_headers_and_body(gateway: GatewayThread) -> None:
    answer = httpx.put(f"{gateway.url}/api/v1/agents/7?b=2&a=1", content=b'{"x": 1}',
                       headers={"X-Custom": "yes", "Content-Type": "application/json"})
    assert answer.status_code == 200
    seen = answer.json()
    assert (seen["method"], seen["path"], seen["query"]) == ("PUT", "/api/v1/agents/7", {"b": "2", "a": "1"})
    assert seen["body"] == '{"x": 1}'
    headers = {name.lower(): value for name, value in seen["headers"].items()}  # names are case-blind
    assert headers["x-custom"] == "yes"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
    assert headers["x-request-id"] == answer.headers["x-request-id"]


def test_strips_hop_by_hop_headers_and_those_named_in_connection(gateway: GatewayThread) -> None:
    answer = httpx.get(f"{gateway.url}/api/v1/agents", headers={
        "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "timeout=5",
        "TE": "trailers", "Proxy-Authorization": "Basic x", "X-Kept": "1"})
    headers = {k.lower() for k in answer.json()["headers"]}
    assert "x-secret-hop" not in headers and "keep-alive" not in headers
    assert "te" not in headers and "proxy-authorization" not in headers
    assert "x-kept" in headers


def test_keeps_the_client_request_id_and_appends_forwarded_for(gateway: GatewayThread) -> None:
    answer = httpx.get(f"{gateway.url}/api/v1/agents",
                       headers={"X-Request-ID": "abc-123", "X-Forwarded-For": "10.1.2.3"})
    assert answer.headers["x-request-id"] == "abc-123"
    assert answer.json()["headers"]["X-Request-ID"] == "abc-123"
    assert answer.json()["headers"]["X-Forwarded-For"] == "10.1.2.3, 127.0.0.1"


def test_prefix_route_strips_its_prefix(gateway: GatewayThread) -> None:
    assert httpx.get(f"{gateway.url}/files/a/b.txt").json()["path"] == "/a/b.txt"


def test_unknown_path_is_404_json(gateway: GatewayThread) -> None:
    answer = httpx.get(f"{gateway.url}/nowhere")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] == "no route"


def test_stopped_backend_is_502_within_a_second() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with _gateway([{"path": "/dead", "target": dead}]) as gateway:
        started = time.monotonic()
        answer = httpx.get(f"{gateway.url}/dead")
        assert time.monotonic() - started < 1.0
        assert answer.status_code == 502
        assert answer.json()["error"] == "backend unreachable"


def test_slow_backend_is_504(gateway: GatewayThread) -> None:
    answer = httpx.get(f"{gateway.url}/slow?seconds=2", timeout=10)
    assert answer.status_code == 504
    assert answer.json()["error"] == "backend timed out"


def test_body_over_the_limit_is_413(gateway: GatewayThread) -> None:
    assert httpx.post(f"{gateway.url}/echo/x", content=b"a" * 1000).status_code == 200
    declared = httpx.post(f"{gateway.url}/echo/x", content=b"a" * 1001)
    assert declared.status_code == 413 and declared.json()["error"] == "request body too large"

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"b" * 100

    streamed = httpx.post(f"{gateway.url}/echo/x", content=chunks())  # chunked: no length declared
    assert streamed.status_code == 413


def test_large_upload_streams_to_the_backend(backend: BackendServer) -> None:
    with _gateway([{"path": "/up", "target": backend.url}]) as gateway:
        def chunks() -> Iterator[bytes]:
            for _ in range(64):
                yield b"u" * 65536
        answer = httpx.post(f"{gateway.url}/up", content=chunks(), timeout=30)
        assert answer.status_code == 200
        assert answer.json()["body_size"] == 64 * 65536


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_50mb_response_streams_without_buffering(backend: BackendServer) -> None:
    from tests.support import GatewayProcess

    size = 50 * 1024 * 1024
    with GatewayProcess({"router": {"routes": [{"path": "/bytes/*", "target": backend.url}]}}) as gateway:
        assert gateway.proc is not None
        before = _rss_kib(gateway.proc.pid)
        peak = before
        received = 0
        with httpx.stream("GET", f"{gateway.url}/bytes/{size}", timeout=60) as answer:
            assert answer.status_code == 200
            for chunk in answer.iter_bytes(1024 * 1024):
                received += len(chunk)
                peak = max(peak, _rss_kib(gateway.proc.pid))
                time.sleep(0.002)  # a slow reader: the gateway must wait, not buffer
        assert received == size
        growth_mib = (peak - before) / 1024
        assert growth_mib < 15, f"gateway grew by {growth_mib:.1f} MiB while streaming 50 MiB"


def test_health_and_ready(gateway: GatewayThread) -> None:
    assert httpx.get(f"{gateway.url}/_gateway/health").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/_gateway/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_ready_reports_an_unreachable_store(backend: BackendServer) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with _gateway([{"path": "/a", "target": backend.url}], redis={"url": dead_redis}) as gateway:
        assert httpx.get(f"{gateway.url}/_gateway/health").status_code == 200
        assert httpx.get(f"{gateway.url}/_gateway/ready").status_code == 503
        assert httpx.get(f"{gateway.url}/a").status_code == 200  # proxying goes on without the store


async def test_seed_orchestrator_handle_request(backend: BackendServer) -> None:
    from app.orchestrator import ApiGatewayOrchestrator

    orchestrator = ApiGatewayOrchestrator()
    orchestrator.router.add_route("/api/test", "GET", backend.url)
    try:
        response, status = await orchestrator.handle_request(
            client_id="test", path="/api/test", method="GET", data={}, schema_version="v1")
        assert status == 200 and response["path"] == "/api/test"
        response, status = await orchestrator.handle_request("test", "/nowhere", "GET", {})
        assert status == 404 and response["error"] == "no route"
    finally:
        await orchestrator.close()


