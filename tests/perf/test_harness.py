"""The benchmark harness runs end to end (``pytest -m perf``; excluded from the default run).

It runs ``python -m tests.perf.run --quick`` as a user would and checks that every configuration
was measured or explicitly reported as missing, with figures that make sense. It asserts nothing
about speed: a shared machine makes timed assertions flaky, and the figures are for people.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.perf.configs import BENCH_PATH, CASES
from tests.perf.servers import nginx_path
from tests.support import ROOT

pytestmark = pytest.mark.perf


def test_quick_run_measures_every_configuration(tmp_path: Path) -> None:
    missing = [tool for tool, found in (("nginx", nginx_path()), ("wrk", shutil.which("wrk")),
                                        ("redis-server", shutil.which("redis-server"))) if not found]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run tests/perf/setup.sh")
    done = subprocess.run([sys.executable, "-m", "tests.perf.run", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    results = {r["name"]: r for r in data["results"]}
    assert set(results) == {"direct", "nginx_proxy", "bare_proxy", *(c.name for c in CASES)}
    for name in ("direct", "nginx_proxy", "bare_proxy", "gw_proxy", "gw2_proxy"):
        assert results[name]["status"] == "ok", results[name]
        assert results[name]["rps"] > 0 and 0 < results[name]["p50_ms"] <= results[name]["p99_ms"]
        assert results[name]["cpu_us"] > 0
    # The proxy-only route asks nothing of Redis; a component that did would show here.
    assert results["gw_proxy"]["redis_round_trips"] < 0.05
    assert results["gw_proxy"]["open_loop"]["ok"] > 0
    for case in CASES:
        status = results[case.name]["status"]
        assert status == "ok" or status.startswith("n/a"), (case.name, status)
    markdown = (tmp_path / "latest.md").read_text()
    assert "gateway (a) proxy-only route" in markdown and "Targets" in markdown


def test_rate_limited_peers_answer_and_limit_per_client() -> None:
    """Each contestant of tests/perf/bench_peers.py, under a limit of 2 a minute: a client's third
    request is refused, another client's first is not (the limit is per X-Client-ID)."""
    missing = [tool for tool, found in (("nginx", nginx_path()), ("haproxy", shutil.which("haproxy")),
                                        ("redis-server", shutil.which("redis-server"))) if not found]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run tests/perf/setup.sh")
    from tests.perf.bench_peers import start_contestants
    from tests.perf.servers import backend_nginx
    from tests.support import RedisProcess, free_port

    with RedisProcess() as redis:
        backend_port = free_port()
        backend = backend_nginx(backend_port).start(backend_port)
        try:
            contestants = start_contestants(backend_port, redis, 2)
            try:
                assert [c.name for c in contestants] == ["nginx_limit_req", "haproxy", "gateway_1w", "gateway_2w",
                                                         "seed_pattern"]
                for contestant in contestants:
                    url = contestant.url + BENCH_PATH
                    first = [httpx.get(url, headers={"X-Client-ID": f"smoke-{contestant.name}"}, timeout=5)
                             for _ in range(3)]
                    other = httpx.get(url, headers={"X-Client-ID": f"other-{contestant.name}"}, timeout=5)
                    assert [r.status_code for r in first] == [200, 200, 429], contestant.name
                    assert first[0].json()["service"] == "bench", contestant.name  # the backend's answer
                    assert other.status_code == 200, contestant.name
            finally:
                for contestant in contestants:
                    contestant.process.stop()
        finally:
            backend.stop()
