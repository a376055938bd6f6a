"""The gateway's own collector exports ``_created`` series as prometheus_client's Counter and
Histogram do, and drops them when prometheus_client's switch turns them off."""

from __future__ import annotations

from prometheus_client import disable_created_metrics, enable_created_metrics, generate_latest

from app.observability.metrics import REGISTRY, RouteMetrics


def _created_series(text: bytes) -> set[str]:
    return {line.split(b"{")[0].decode() for line in text.splitlines()
            if b'route="* /created"' in line and b"_created" in line.split(b"{")[0]}


def test_created_series_follow_prometheus_clients_switch() -> None:
    RouteMetrics("* /created").observe(200, 0.002, 0.001)
    enable_created_metrics()
    try:
        assert _created_series(generate_latest(REGISTRY)) == {
            "apigw_requests_created", "apigw_gateway_overhead_seconds_created", "apigw_backend_duration_seconds_created"}
        disable_created_metrics()
        assert _created_series(generate_latest(REGISTRY)) == set()
    finally:
        enable_created_metrics()
