"""What the backend receives through the gateway, byte for byte where it matters: pins the
behaviour that the hot-path work of issue 8 (app/edge/upstream.py, app/pipeline/orchestrator.py) must keep."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from app.config import parse_config
from tests.support import BackendServer, GatewayThread


@pytest.fixture
def gateway(backend: BackendServer) -> Iterator[GatewayThread]:
    routes = [{"path": "/any/*", "target": backend.url}]
    with GatewayThread(parse_config({"router": {"routes": routes}}, {})) as server:
        yield server


def _raw_request(port: int, request: bytes) -> dict:
    """Only the bytes given go to the gateway (an HTTP client would add headers of its own)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):  # Connection: close, so the answer ends with the stream
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


def test_the_gateway_adds_no_client_headers_of_its_own(gateway: GatewayThread) -> None:
    seen = _raw_request(gateway.port, b"GET /any/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    names = {name.lower() for name in seen["headers"]}
    assert not names & {"user-agent", "accept", "accept-encoding"}, names
    assert {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"} <= names


def test_a_body_without_a_type_gets_aiohttps_default_type(gateway: GatewayThread) -> None:
    seen = _raw_request(gateway.port, b"POST /any/b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                      b"Connection: close\r\n\r\nabc")
    headers = {name.lower(): value for name, value in seen["headers"].items()}
    assert seen["body"] == "abc"
    assert not {"user-agent", "accept", "accept-encoding"} & set(headers)
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-length"] == "3"


def test_client_sent_accept_and_user_agent_pass_unchanged(gateway: GatewayThread) -> None:
    seen = _raw_request(gateway.port, b"GET /any/c HTTP/1.1\r\nHost: x\r\nUser-Agent: me/1\r\n"
                                      b"Accept: text/plain\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n")
    headers = {name.lower(): value for name, value in seen["headers"].items()}
    assert (headers["user-agent"], headers["accept"], headers["accept-encoding"]) == ("me/1", "text/plain", "identity")
