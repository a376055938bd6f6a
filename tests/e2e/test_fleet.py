"""The fleet as processes: ``python -m app backend`` and ``python -m app fleet``."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.support import ROOT, free_port, wait_for

pytestmark = pytest.mark.e2e


def test_backend_command_serves_a_demo_backend_until_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app", "backend", "--name", "svc-x", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"demo backend svc-x on http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/hello", timeout=1).status_code == 200,
                 what="backend")
        answer = httpx.get(f"http://127.0.0.1:{port}/hello?x=1").json()
        assert (answer["service"], answer["path"], answer["query"]) == ("svc-x", "/hello", {"x": "1"})
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
