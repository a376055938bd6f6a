"""SIGTERM drains one gateway process: readiness false first, then no new connections, the requests
in flight finish (up to server.drain_timeout), and the process exits 0. Real processes, real sockets."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import BackendServer, GatewayProcess, wait_for


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendServer]:
    with BackendServer("drained") as server:
        yield server


def _config(backend: BackendServer, **server: float) -> dict:
    return {"server": {"access_log": False, **server},
            "router": {"routes": [{"path": "/slow", "target": backend.url, "cache": {"enabled": False},
                                   "timeout": {"read": 30}}]}}


def _in_flight(url: str, results: list[httpx.Response | BaseException]) -> threading.Thread:
    def call() -> None:
        try:
            results.append(httpx.get(url, timeout=30))
        except BaseException as error:  # noqa: BLE001 - the test reports it
            results.append(error)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def _ready_status(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/_gateway/ready", timeout=2).status_code
    except httpx.TransportError:
        return None


def test_sigterm_turns_readiness_false_then_finishes_the_request_in_flight_and_exits_0(
        backend: BackendServer) -> None:
    gateway = GatewayProcess(_config(backend, drain_delay=1.5, drain_timeout=20)).start()
    try:
        assert gateway.proc is not None
        assert _ready_status(gateway.url) == 200
        backend.reset_hits()
        results: list[httpx.Response | BaseException] = []
        thread = _in_flight(f"{gateway.url}/slow?seconds=3", results)
        wait_for(lambda: backend.hits.get("/slow", 0) == 1, what="the slow request at the backend")
        gateway.proc.send_signal(signal.SIGTERM)
        # The drain has begun and the listener still accepts: readiness answers, and says no.
        wait_for(lambda: _ready_status(gateway.url) == 503, what="readiness false")
        answer = httpx.get(f"{gateway.url}/_gateway/ready", timeout=2)
        assert answer.json()["status"] == "draining"
        # Past the delay the listener is closed: a new connection is refused, while the slow
        # request is still running.
        wait_for(lambda: _ready_status(gateway.url) is None, what="the listener closed")
        assert thread.is_alive()
        thread.join(timeout=30)
        assert len(results) == 1 and isinstance(results[0], httpx.Response), results
        assert results[0].status_code == 200 and results[0].json()["slow"] is True
        assert gateway.proc.wait(timeout=20) == 0, gateway.log()
    finally:
        gateway.stop()


def test_sigterm_without_a_delay_stops_accepting_at_once_and_still_finishes_the_request(
        backend: BackendServer) -> None:
    gateway = GatewayProcess(_config(backend)).start()
    try:
        assert gateway.proc is not None
        backend.reset_hits()
        results: list[httpx.Response | BaseException] = []
        thread = _in_flight(f"{gateway.url}/slow?seconds=2", results)
        wait_for(lambda: backend.hits.get("/slow", 0) == 1, what="the slow request at the backend")
        gateway.proc.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        assert isinstance(results[0], httpx.Response) and results[0].status_code == 200, results
        assert gateway.proc.wait(timeout=20) == 0, gateway.log()
    finally:
        gateway.stop()


def test_a_request_longer_than_drain_timeout_is_cut_and_the_process_still_exits_0(
        backend: BackendServer) -> None:
    gateway = GatewayProcess(_config(backend, drain_timeout=1)).start()
    try:
        assert gateway.proc is not None
        backend.reset_hits()
        results: list[httpx.Response | BaseException] = []
        thread = _in_flight(f"{gateway.url}/slow?seconds=25", results)
        wait_for(lambda: backend.hits.get("/slow", 0) == 1, what="the slow request at the backend")
        began = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(timeout=20) == 0, gateway.log()
        assert time.monotonic() - began < 15  # the drain did not wait out the 25 s request
        thread.join(timeout=10)
        assert not isinstance(results[0], httpx.Response) or results[0].status_code != 200
    finally:
        gateway.stop()
