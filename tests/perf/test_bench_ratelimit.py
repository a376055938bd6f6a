"""The rate-limit benchmark runs end to end (short figures; nothing about speed is asserted)."""

import shutil

import pytest

pytestmark = pytest.mark.perf


def test_bench_ratelimit_reports_same_run_ratios() -> None:
    for tool in ("redis-server", "redis-benchmark", "nginx", "wrk"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (tests/perf/setup.sh)")
    from tests.perf.bench_ratelimit import report, run

    results = run(seconds=1, connections=8, rounds=1, requests=5000)
    text = report(results)
    assert "ratio" in text and "on/off ratio" in text
    assert results["gateway"]["limiting_on_rps"] > 0 and results["library"]["decisions_per_s"] > 0
