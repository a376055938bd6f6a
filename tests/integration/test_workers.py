"""``serve --workers N``: N worker processes on one port, each a whole gateway, supervised by a
parent that restarts a dead worker and drains them all on SIGTERM. Real processes, real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import BackendServer, GatewayProcess, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendServer]:
    with BackendServer("behind-workers") as server:
        yield server


def _config(redis_url: str, backend: BackendServer, prefix: str) -> dict:
    return {
        "server": {"access_log": False},
        "redis": {"url": redis_url, "prefix": prefix, "connect_timeout": 2.0, "socket_timeout": 2.0},
        "router": {"routes": [
            {"path": "/limited/*", "target": backend.url, "cache": {"enabled": False},
             "rate_limit": {"requests_per_minute": 5, "requests_per_hour": None}},
            {"path": "/counted/*", "target": backend.url, "cache": {"enabled": False}},
            {"path": "/slow", "target": backend.url, "cache": {"enabled": False}, "timeout": {"read": 30}},
        ]},
        "rate_limiter": {"client_id_trusted_from": ["127.0.0.0/8"]},
        "cache": {"enabled": False},
    }


@pytest.fixture(scope="module")
def workers(redis_url: str, backend: BackendServer) -> Iterator[GatewayProcess]:
    gateway = _start(redis_url, backend)
    try:
        yield gateway
    finally:
        gateway.stop()


def _start(redis_url: str, backend: BackendServer) -> GatewayProcess:
    gateway = GatewayProcess(_config(redis_url, backend, f"t{uuid.uuid4().hex[:10]}"), args=("--workers", "2"))
    gateway.start(wait=False)
    # Two spawned interpreters importing the gateway at once on a shared 2-core machine: slow to start.
    wait_for(gateway._healthy, timeout=90, what="a worker answering")
    return gateway


def _worker_pid(url: str) -> int:
    # A new connection each time: the kernel hands it to whichever worker accepts first.
    with httpx.Client(timeout=5) as client:
        body = client.get(f"{url}/_gateway/health").json()
    assert body["status"] == "ok" and body["worker"] in (0, 1)
    return int(body["pid"])


def _pids_seen(url: str, attempts: int = 600) -> set[int]:
    seen: set[int] = set()
    for _ in range(attempts):
        seen.add(_worker_pid(url))
        if len(seen) == 2:
            break
    return seen


def _workers_of(gateway: GatewayProcess) -> set[int]:
    assert gateway.proc is not None
    children = Path(f"/proc/{gateway.proc.pid}/task/{gateway.proc.pid}/children").read_text().split()
    # Not multiprocessing's resource tracker, the parent's other child.
    return {int(pid) for pid in children if b"spawn_main" in _cmdline(int(pid))}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_two_workers_both_serve_the_one_port(workers: GatewayProcess) -> None:
    seen = _pids_seen(workers.url)
    assert len(seen) == 2, seen
    assert seen <= _workers_of(workers)  # the parent's own children, not some other process


def test_the_rate_limit_is_exact_across_workers(workers: GatewayProcess) -> None:
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    codes = []
    for _ in range(12):
        with httpx.Client(timeout=5) as client:  # a new connection each, spread over both workers
            codes.append(client.get(f"{workers.url}/limited/x", headers={"X-Client-ID": client_id}).status_code)
    assert codes.count(200) == 5 and codes.count(429) == 7, codes


def test_a_killed_worker_is_restarted_and_the_port_keeps_serving(workers: GatewayProcess) -> None:
    before = _workers_of(workers)
    assert len(before) == 2
    victim = _worker_pid(workers.url)
    os.kill(victim, signal.SIGKILL)
    # Meanwhile the other worker answers every request on the port.
    for _ in range(20):
        assert _worker_pid(workers.url) != victim
    wait_for(lambda: len(_workers_of(workers) - before) == 1 and len(_workers_of(workers)) == 2,
             timeout=30, what="a new worker in place of the killed one")
    replacement = (_workers_of(workers) - before).pop()
    wait_for(lambda: replacement in _pids_seen(workers.url, 50), timeout=30, what="the new worker serving")
    assert f"(pid {victim}) exited with -9; restarting it" in workers.log()


def test_sigterm_drains_every_worker_and_the_parent_exits_0(redis_url: str, backend: BackendServer) -> None:
    gateway = _start(redis_url, backend)
    try:
        assert gateway.proc is not None
        children = _workers_of(gateway)
        backend.reset_hits()
        results: list[object] = []
        thread = threading.Thread(target=lambda: results.append(
            httpx.get(f"{gateway.url}/slow?seconds=3", timeout=30)), daemon=True)
        thread.start()
        wait_for(lambda: backend.hits.get("/slow", 0) == 1, what="the slow request at the backend")
        gateway.proc.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        assert len(results) == 1 and isinstance(results[0], httpx.Response), results
        assert results[0].status_code == 200
        assert gateway.proc.wait(timeout=30) == 0, gateway.log()
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        gateway.stop()


def test_more_than_one_worker_on_the_memory_store_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("API_GATEWAY_CONFIG", "API_GATEWAY_REDIS_URL", "REDIS_URL")}
    done = subprocess.run([sys.executable, "-m", "app", "serve", "--workers", "2", "--port", str(free_port())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "needs Redis" in done.stderr and "redis.url" in done.stderr


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_a_bad_workers_value_is_refused_naming_it(value: str) -> None:
    done = subprocess.run([sys.executable, "-m", "app", "serve", "--workers", value],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--workers" in done.stderr and "auto" in done.stderr


def _requests_total(text: str, path: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("apigw_requests_total{") and path in line and 'status="200"' in line)


def test_one_scrape_counts_the_requests_of_every_worker(workers: GatewayProcess) -> None:
    count = 40
    served_by: set[int] = set()
    for _ in range(count):
        with httpx.Client(timeout=5) as client:  # a new connection each, spread over both workers
            assert client.get(f"{workers.url}/counted/x").status_code == 200
    served_by = _pids_seen(workers.url)
    assert len(served_by) == 2

    def scrape() -> float:
        with httpx.Client(timeout=5) as client:
            return _requests_total(client.get(f"{workers.url}/_gateway/metrics").text, "/counted/")

    # Each worker writes its counts every second; a scrape then has them all, whichever answers.
    wait_for(lambda: scrape() == count, timeout=30, what=f"one scrape reporting {count} requests")
    assert [scrape() for _ in range(10)] == [count] * 10


def test_one_admin_reload_reloads_every_worker(redis_url: str, backend: BackendServer) -> None:
    config = _config(redis_url, backend, f"t{uuid.uuid4().hex[:10]}")
    config["admin"] = {"token": "reload-token"}
    gateway = GatewayProcess(config, args=("--workers", "2"))
    gateway.start(wait=False)
    try:
        wait_for(gateway._healthy, timeout=90, what="a worker answering")
        assert len(_pids_seen(gateway.url)) == 2
        config["router"]["routes"].append({"path": "/added/*", "target": backend.url, "cache": {"enabled": False}})
        gateway.config_path.write_text(yaml.safe_dump(config))

        answer = httpx.post(f"{gateway.url}/_gateway/config/reload",
                            headers={"Authorization": "Bearer reload-token"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["version"] == 2, answer.text

        # Every worker on version 2 (each new connection goes to whichever worker accepts it).
        versions: dict[int, int] = {}

        def every_worker_on_2() -> bool:
            with httpx.Client(timeout=5) as client:
                body = client.get(f"{gateway.url}/_gateway/health").json()
            versions[body["worker"]] = body["config_version"]
            return versions == {0: 2, 1: 2}

        wait_for(every_worker_on_2, timeout=30, what="both workers on config version 2")
        for _ in range(20):  # the new route on whichever worker answers
            with httpx.Client(timeout=5) as client:
                assert client.get(f"{gateway.url}/added/x").status_code == 200
    finally:
        gateway.stop()
