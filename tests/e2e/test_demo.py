"""The README's run command: `python -m app demo` serves the demo backends through the gateway."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from tests.support import ROOT, free_port, wait_for


def test_demo_serves_the_backends_through_the_gateway() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app", "demo", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/_gateway/health", timeout=1).status_code == 200,
                 timeout=30, what="the demo gateway")
        agents = httpx.get(f"{base}/api/v1/agents")
        assert agents.status_code == 200 and agents.json()["service"] == "agent-service"
        picked = [httpx.get(f"{base}/demo/who").json()["service"] for _ in range(8)]
        assert picked.count("agent-service") == 6 and picked.count("thread-service") == 2  # 3:1
        created = httpx.post(f"{base}/api/v1/threads", json={"title": "hi"})
        assert created.json()["service"] == "thread-service" and created.json()["body"] == '{"title":"hi"}'
        missing = httpx.get(f"{base}/nowhere")
        assert missing.status_code == 404 and missing.json()["error"] == "no route"
        # What the printed rate-limit and cache commands show.
        limited = [httpx.get(f"{base}/limited/x", headers={"X-Client-ID": "alice"}).status_code for _ in range(7)]
        assert limited == [200] * 5 + [429] * 2
        assert [httpx.get(f"{base}/cached/report").headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert f"curl -i {base}/api/v1/agents" in output  # it told the user what to try
    assert f"-H 'X-Client-ID: alice' {base}/limited/x; done" in output
    assert f"curl -s -o /dev/null -D - {base}/cached/report | grep -i '^x-cache'" in output
    assert "Status page and admin API: off. Start the demo with --admin-token TOKEN" in output
    assert "Traceback" not in output


def test_demo_with_an_admin_token_prints_the_status_page_that_serves() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app", "demo", "--port", str(port), "--admin-token", "t0ken-t0ken"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/_gateway/health", timeout=1).status_code == 200,
                 timeout=30, what="the demo gateway")
        assert httpx.get(f"{base}/_gateway/").status_code == 200
        status = httpx.get(f"{base}/_gateway/status", headers={"Authorization": "Bearer t0ken-t0ken"})
        assert status.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert f"Status page: {base}/_gateway/#token=t0ken-t0ken" in output
    assert f"curl -H 'Authorization: Bearer t0ken-t0ken' {base}/_gateway/routes" in output


def test_demo_help_says_how_to_turn_the_admin_api_on() -> None:
    done = subprocess.run([sys.executable, "-m", "app", "demo", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and "--admin-token" in done.stdout and "admin API" in done.stdout


@pytest.mark.parametrize("command", [["demo"], ["serve"]])
def test_a_busy_port_is_named_with_the_option_that_moves_it(command: list[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "app", *command, "--host", "127.0.0.1", "--port", str(port)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60, env=_no_config_env())
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is busy" in done.stderr and "--port" in done.stderr
    assert "Errno" not in done.stderr and "Traceback" not in done.stderr


def test_serve_without_a_config_says_it_has_no_routes() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_no_config_env())
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/_gateway/health", timeout=1).status_code == 200,
                 timeout=30, what="the gateway")
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert "serve: no config file: starting with 0 routes, so every request answers 404" in output
    assert "--config FILE" in output and "Traceback" not in output


def _no_config_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("API_GATEWAY_") and k != "REDIS_URL"}
