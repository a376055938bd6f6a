"""Slow clients: a head must be whole within header_timeout, a body may not stall beyond
body_timeout, idle connections close after client_keepalive_timeout, and the connections one
process takes are bounded. 1,000 slowloris connections leave a normal client served."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.attacks.conftest import edge_gateway
from tests.attacks.raw import RawBackend, RawClient
from tests.support import GatewayThread

PARTIAL_HEAD = b"GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Slow: "


@pytest.fixture
def quick(raw_backend: RawBackend) -> Iterator[GatewayThread]:
    limits = {"header_timeout": 1, "body_timeout": 1, "client_keepalive_timeout": 1}
    with edge_gateway(raw_backend, limits=limits) as gateway:
        yield gateway


def test_a_head_not_whole_in_time_gets_408_and_is_closed(quick: GatewayThread, raw_backend: RawBackend) -> None:
    with RawClient(quick.port) as client:
        started = time.monotonic()
        client.send(PARTIAL_HEAD)
        answer = client.answer()
        assert (answer.status, answer.json()) == (408, {"error": "request head not received in time", "limit": 1.0})
        assert client.closed(within=2)
        assert 0.9 <= time.monotonic() - started < 3
    assert raw_backend.raw == b""


def test_a_trickled_head_does_not_reset_the_clock(quick: GatewayThread, raw_backend: RawBackend) -> None:
    with RawClient(quick.port) as client:
        started = time.monotonic()
        client.send(PARTIAL_HEAD)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):  # noqa: PT012
            for _ in range(30):
                client.send(b"a")
                time.sleep(0.2)
        assert time.monotonic() - started < 3
        assert client.answer().status == 408
    assert raw_backend.raw == b""


def test_a_connection_that_never_sends_is_closed_without_an_answer(quick: GatewayThread) -> None:
    with RawClient(quick.port) as client:
        started = time.monotonic()
        assert client.closed(within=3)
        assert client.buffer == b""
        assert 0.9 <= time.monotonic() - started < 3


def test_the_head_clock_runs_for_each_request_of_a_connection(quick: GatewayThread, raw_backend: RawBackend) -> None:
    with RawClient(quick.port) as client:
        assert client.send(b"GET /public/a HTTP/1.1\r\nHost: gw\r\n\r\n").answer().status == 200
        time.sleep(0.5)
        client.send(PARTIAL_HEAD)  # within the keep-alive time, then stalled
        assert client.answer().status == 408
        assert client.closed(within=2)
    assert [r.target for r in raw_backend.received] == [b"/public/a"]


def test_an_idle_keep_alive_connection_is_closed(quick: GatewayThread) -> None:
    with RawClient(quick.port) as client:
        assert client.send(b"GET /public/a HTTP/1.1\r\nHost: gw\r\n\r\n").answer().status == 200
        started = time.monotonic()
        assert client.closed(within=4)
        assert client.buffer == b""
        assert 0.9 <= time.monotonic() - started < 3


def test_a_stalled_body_gets_408_and_is_closed(quick: GatewayThread, raw_backend: RawBackend) -> None:
    with RawClient(quick.port) as client:
        started = time.monotonic()
        client.send(b"POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\nabc")
        answer = client.answer()
        assert (answer.status, answer.json()) == (408, {"error": "request body not received in time", "limit": 1.0})
        assert client.closed(within=2)
        assert 0.9 <= time.monotonic() - started < 3.5
    assert raw_backend.raw == b""


def test_a_slow_body_that_keeps_coming_is_served(quick: GatewayThread, raw_backend: RawBackend) -> None:
    with RawClient(quick.port) as client:
        client.send(b"POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 8\r\n\r\n")
        for byte in b"12345678":
            time.sleep(0.3)  # 2.4 s in all, each gap under body_timeout
            client.send(bytes([byte]))
        assert client.answer().status == 200
    assert raw_backend.received[0].body == b"12345678"


def test_connections_over_the_limit_are_refused_at_once(raw_backend: RawBackend) -> None:
    with edge_gateway(raw_backend, limits={"max_client_connections": 5}) as gateway:
        held = [RawClient(gateway.port).send(PARTIAL_HEAD) for _ in range(5)]
        try:
            time.sleep(0.3)  # all five accepted
            with RawClient(gateway.port) as extra:
                started = time.monotonic()
                answer = extra.answer()
                assert (answer.status, answer.json()) == (503, {"error": "too many client connections", "limit": 5})
                assert extra.closed(within=1)
                assert time.monotonic() - started < 1
        finally:
            for client in held:
                client.close()
        time.sleep(0.3)
        with RawClient(gateway.port) as client:
            assert client.send(b"GET /public/a HTTP/1.1\r\nHost: gw\r\n\r\n").answer().status == 200


def test_1000_slowloris_connections_leave_a_normal_client_served(raw_backend: RawBackend) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2500:  # both ends of every connection live in this process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    with edge_gateway(raw_backend, limits={"header_timeout": 4}) as gateway:
        attackers: list[socket.socket] = []
        try:
            for _ in range(1000):
                sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
                sock.sendall(PARTIAL_HEAD)
                attackers.append(sock)
            for sock in attackers[::10]:  # and they keep trickling
                sock.sendall(b"a")
            started = time.monotonic()
            answer = httpx.get(f"{gateway.url}/public/normal", timeout=10)
            assert answer.status_code == 200
            assert time.monotonic() - started < 2  # served at once: a wide margin over the ~ms it takes
            # Once header_timeout has passed, every attacker was answered 408 and closed.
            deadline = time.monotonic() + 10
            for sock in attackers:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
                assert data.startswith(b"HTTP/1.1 408 ")
        finally:
            for sock in attackers:
                sock.close()
    assert [r.target for r in raw_backend.received] == [b"/public/normal"]


@pytest.mark.parametrize("partial", [b"G", b"GET", b"GET /pub"])
def test_a_request_line_that_stalls_gets_408(quick: GatewayThread, raw_backend: RawBackend, partial: bytes) -> None:
    with RawClient(quick.port) as client:
        client.send(partial)
        answer = client.answer()
        assert (answer.status, answer.json()["error"]) == (408, "request head not received in time")
        assert client.closed(within=2)
    assert raw_backend.raw == b""


def test_a_request_line_that_stalls_on_a_kept_alive_connection_gets_408(quick: GatewayThread,
                                                                        raw_backend: RawBackend) -> None:
    with RawClient(quick.port) as client:
        assert client.send(b"GET /public/a HTTP/1.1\r\nHost: gw\r\n\r\n").answer().status == 200
        started = time.monotonic()
        client.send(b"GE")  # cancels the keep-alive timer: the head's clock must take over
        assert client.answer().status == 408
        assert client.closed(within=2)
        assert time.monotonic() - started < 3.5  # the head's 1 s, not the keep-alive's or never
    assert [r.target for r in raw_backend.received] == [b"/public/a"]


def test_a_streamed_body_that_stalls_gets_408_and_is_no_backend_failure(raw_backend: RawBackend) -> None:
    from app.config import parse_config

    route = {"path": "/public/*", "target": raw_backend.url,
             "circuit_breaker": {"failure_threshold": 1, "recovery_timeout": 30}}
    config = parse_config({"server": {"access_log": False, "limits": {"body_timeout": 1}},
                           "router": {"routes": [route]}}, {})
    with GatewayThread(config) as gateway:
        with RawClient(gateway.port) as client:
            # Larger than the gateway reads whole: streamed to the backend as it comes.
            client.send(b"POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 200_000)
            answer = client.answer()
            assert (answer.status, answer.json()["error"]) == (408, "request body not received in time")
        # The client's stall did not open the backend's circuit.
        with RawClient(gateway.port) as client:
            assert client.send(b"GET /public/after HTTP/1.1\r\nHost: gw\r\n\r\n").answer().status == 200
        circuit = gateway.gateway.orchestrator.circuit_breaker_manager.get_all_stats()["* /public/*"]
        assert circuit["state"] == "closed" and circuit["failure_count"] == 0
