"""What the edge answers itself (before the app runs) is seen as the app's answers are: one access
log line with the status and the reason, and a count in apigw_requests_total under route "(edge)".
A body refused for stalling is logged by the app that was reading it, as 408 (not as 499)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.attacks.conftest import edge_gateway
from tests.attacks.raw import RawBackend, RawClient
from tests.support import GatewayThread, metric_value, wait_for


class Logged:
    def __init__(self, gateway: GatewayThread) -> None:
        self.gateway = gateway
        self.stream = io.BytesIO()
        gateway.gateway.access_log.stream = self.stream  # type: ignore[union-attr]

    def lines(self, count: int) -> list[dict[str, Any]]:
        wait_for(lambda: self.stream.getvalue().count(b"\n") >= count, what=f"{count} access log line(s)")
        return [orjson.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def logged(raw_backend: RawBackend) -> Iterator[Logged]:
    gateway = edge_gateway(raw_backend, access_log=True,
                           limits={"header_timeout": 1, "body_timeout": 1, "max_fields": 5, "max_target": 100})
    log = Logged(gateway)
    with gateway:
        yield log


def _edge_count(status: int) -> float:
    return metric_value("apigw_requests_total", route="(edge)", status=str(status))


@pytest.mark.parametrize(("data", "status", "reason", "method", "path"), [
    (b"GET /public/x HTTP/1.1\r\nHost: gw\r\nHost: evil\r\n\r\n", 400, "more than one Host header", "GET",
     "/public/x"),
    # The line keeps the target's first 2 KiB.
    (b"GET /public/" + b"a" * 3000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n", 414, "request target too long", "GET",
     ("/public/" + "a" * 3000)[:2048]),
    (b"GET /public/x HTTP/1.1\r\nHost: gw\r\n" + b"X-A: 1\r\n" * 6 + b"\r\n", 431,
     "too many request header fields", "GET", "/public/x"),
    (b"POST /public/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip\r\n\r\n", 501, None, "POST", "/public/x"),
    (b"GET /public/x HTTP/2.0\r\nHost: gw\r\n\r\n", 505, "HTTP version not supported", "GET", "/public/x"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "invalid HTTP request", "-", ""),
    (b"GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Slow: ", 408, "request head not received in time", "GET",
     "/public/x"),
])
def test_an_edge_refusal_is_logged_and_counted(logged: Logged, raw_backend: RawBackend, data: bytes, status: int,
                                               reason: str | None, method: str, path: str) -> None:
    before = _edge_count(status)
    with RawClient(logged.gateway.port) as client:
        answer = client.send(data).answer()
        assert answer.status == status
        assert client.closed(within=3)
    [line] = logged.lines(1)
    assert (line["status"], line["method"], line["path"], line["route"]) == (status, method, path, None)
    assert line["reason"] == (reason or answer.json()["error"])
    assert line["request_id"] and line["client"] == "ip:127.0.0.1"
    assert _edge_count(status) == before + 1
    assert raw_backend.raw == b""


def test_a_refused_later_request_on_a_connection_is_logged_after_the_first(logged: Logged,
                                                                          raw_backend: RawBackend) -> None:
    with RawClient(logged.gateway.port) as client:
        assert client.send(b"GET /public/a HTTP/1.1\r\nHost: gw\r\n\r\n").answer().status == 200
        assert client.send(b"GET /public/b HTTP/1.1\r\n\r\n").answer().status == 400
    first, second = logged.lines(2)
    assert (first["status"], first["route"], first["path"]) == (200, "* /public/*", "/public/a")
    assert (second["status"], second["reason"], second["path"]) == (400, "missing Host header", "/public/b")


def test_too_many_connections_is_logged_and_counted(raw_backend: RawBackend) -> None:
    gateway = edge_gateway(raw_backend, access_log=True, limits={"max_client_connections": 1})
    log = Logged(gateway)
    before = _edge_count(503)
    with gateway, RawClient(gateway.port) as holder:
        holder.send(b"GET /public/a HTTP/1.1\r\nHost: gw\r\n")  # holds the one connection
        with RawClient(gateway.port) as refused:
            assert refused.answer().status == 503
        [line] = log.lines(1)
    assert (line["status"], line["reason"], line["method"]) == (503, "too many client connections", "-")
    assert _edge_count(503) == before + 1


def test_a_body_that_stalls_is_logged_as_408(logged: Logged, raw_backend: RawBackend) -> None:
    with RawClient(logged.gateway.port) as client:
        client.send(b"POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\nabc")
        assert client.answer().status == 408
    [line] = logged.lines(1)
    assert (line["status"], line["route"], line["reason"]) == (408, "* /public/*", "request body not received in time")
    assert raw_backend.raw == b""


def test_a_streamed_body_that_stalls_is_logged_as_408(logged: Logged) -> None:
    with RawClient(logged.gateway.port) as client:
        # Larger than the gateway reads whole: streamed to the backend as it comes.
        client.send(b"POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 200_000)
        assert client.answer().status == 408
    [line] = logged.lines(1)
    assert (line["status"], line["reason"]) == (408, "request body not received in time")


def test_a_request_line_that_stalls_is_logged_with_what_was_known(logged: Logged) -> None:
    with RawClient(logged.gateway.port) as client:
        assert client.send(b"GE").answer().status == 408
    [line] = logged.lines(1)
    assert (line["status"], line["method"], line["path"]) == (408, "-", "")
