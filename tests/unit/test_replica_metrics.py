"""The replica's scrape under ``serve --workers``: the workers' snapshots merged (summed counters and
histograms, earliest ``_created``, highest gauge among the live workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.observability import replica_metrics
from app.observability.metrics import CIRCUIT_STATE, REGISTRY, RouteMetrics


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    replica_metrics.share(str(tmp_path))
    try:
        yield tmp_path
    finally:
        replica_metrics._shared = None


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_unshared_the_scrape_is_the_registry_as_is() -> None:
    assert replica_metrics._shared is None
    RouteMetrics("/unshared").observe(200, 0.01, 0.0)
    assert _samples(replica_metrics.exposition()) == _samples(generate_latest(REGISTRY))


def test_one_worker_alone_scrapes_what_its_registry_holds(shared: Path) -> None:
    RouteMetrics("/alone").observe(200, 0.01, 0.002)
    merged = replica_metrics.exposition()
    assert (shared / f"{os.getpid()}.json").exists()
    assert _samples(merged) == _samples(generate_latest(REGISTRY))
    assert generate_latest(REGISTRY).decode().splitlines()[:3] == merged.decode().splitlines()[:3]


def test_counters_and_histograms_add_up_and_gauges_come_from_live_workers(shared: Path) -> None:
    route = RouteMetrics("/merged")
    for _ in range(3):
        route.observe(200, 0.01, 0.002)
    CIRCUIT_STATE.labels(circuit="merged").set(1)
    replica_metrics.write_snapshot()
    own = json.loads((shared / f"{os.getpid()}.json").read_text())
    for family in own:  # another live worker, with the circuit open
        if family["name"] == "apigw_circuit_state":
            for sample in family["samples"]:
                if sample[1] == {"circuit": "merged"}:
                    sample[2] = 2.0
    (shared / f"{os.getppid()}.json").write_text(json.dumps(own))
    dead = json.loads((shared / f"{os.getpid()}.json").read_text())
    for family in dead:  # a dead worker: its counts stay, its gauges do not
        for sample in family["samples"]:
            if family["name"] == "apigw_circuit_state" and sample[1] == {"circuit": "merged"}:
                sample[2] = 7.0
            if sample[0] == "apigw_requests_created" and sample[1]["route"] == "/merged":
                sample[2] = 1.0
    (shared / f"{_dead_pid()}.json").write_text(json.dumps(dead))

    mine = _samples(generate_latest(REGISTRY))
    merged = _samples(replica_metrics.exposition())
    total = ("apigw_requests_total", (("route", "/merged"), ("status", "200")))
    assert mine[total] == 3 and merged[total] == 9
    count = ("apigw_gateway_overhead_seconds_count", (("route", "/merged"),))
    assert merged[count] == 3 * mine[count]
    bucket = ("apigw_backend_duration_seconds_bucket", (("le", "0.0025"), ("route", "/merged")))
    assert merged[bucket] == 9
    assert merged[("apigw_circuit_state", (("circuit", "merged"),))] == 2.0
    assert merged[("apigw_requests_created", (("route", "/merged"), ("status", "200")))] == 1.0


def test_a_snapshot_replaced_under_the_read_is_skipped(shared: Path) -> None:
    (shared / f"{os.getppid()}.json").write_text('[{"name": "apigw_requ')
    assert _samples(replica_metrics.exposition()) == _samples(generate_latest(REGISTRY))
