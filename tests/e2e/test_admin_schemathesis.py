"""schemathesis against the admin API's own OpenAPI, on a replica process with a real Redis: no
5xx, no admin call answered without the token, every answer as documented."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import BackendServer, GatewayProcess

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

TOKEN = "schemathesis-admin-token-42"
CHECKS = ("not_a_server_error", "ignored_auth", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")


def _st() -> str:
    exe = shutil.which("st", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    return exe


def test_schemathesis_finds_no_server_error_and_no_unauthenticated_access(
        redis_url: str, key_prefix: str, redis_client: object, backend: BackendServer, tmp_path: Path) -> None:
    config = {"redis": {"url": redis_url, "prefix": key_prefix}, "admin": {"token": TOKEN},
              "router": {"routes": [{"id": "agents", "path": "/api/v1/agents", "target": backend.url}]}}
    with GatewayProcess(config) as gateway:
        run = subprocess.run(
            [_st(), "run", f"{gateway.url}/_gateway/openapi.json", "--checks", ",".join(CHECKS),
             "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "50", "--workers", "1",
             "-H", f"Authorization: Bearer {TOKEN}", "--generation-database", "none", "--no-color",
             "--request-timeout", "5"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)
        (tmp_path / "schemathesis.txt").write_text(run.stdout + run.stderr)
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert "Traceback" not in gateway.log()
    assert "passed" in run.stdout
