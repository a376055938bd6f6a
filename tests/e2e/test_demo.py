"""The README's run command: `python -m app demo` serves the demo backends through the gateway."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx

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
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert f"curl -i {base}/api/v1/agents" in output  # it told the user what to try
    assert "Traceback" not in output
