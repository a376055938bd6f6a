"""Runs the cache benchmark when asked (``pytest -m perf tests/perf/test_bench_cache.py``).

Nothing here asserts speed; it checks that the figures were taken and that every gateway answer
in the hit run came from the cache with one Redis round trip.
"""

import shutil

import pytest

from tests.perf.bench_cache import run

pytestmark = pytest.mark.perf


@pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("wrk")), reason="needs nginx and wrk")
def test_cache_hit_benchmark_runs() -> None:
    results = run(seconds=3, connections=16)
    print(results)
    assert results["gateway"]["non_2xx"] == 0
    assert results["backend_requests_during_gateway_hits"] == 0
    assert results["redis_round_trips_per_hit"] <= 1.05
