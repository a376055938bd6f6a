"""Metrics, access logs and tracing of a replica process, after real traffic to real backends."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.observability.metrics import REGISTRY
from tests.support import BackendServer, GatewayProcess, RedisProcess, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

# Families whose component is not on main yet: present in the scrape (HELP/TYPE), without samples.
# Families whose component is not on main yet: present (HELP/TYPE) but without samples. Active health
# checks (app/breaker/health.py) join by themselves when they land: the "ok" route asks for them.
NOT_YET_WIRED = set() if importlib.util.find_spec("app.breaker.health") else {"apigw_health_checks"}


def _routes(backend: BackendServer) -> list[dict]:
    return [
        {"id": "ok", "path": "/ok/*", "target": backend.url, "strip_prefix": True,
         "health_check": {"path": "/", "interval": 0.2}},
        {"id": "slow", "path": "/slow", "target": backend.url, "timeout": {"read": 0.2}, "cache": {"enabled": False}},
        {"id": "dead", "path": "/dead", "target": f"http://127.0.0.1:{free_port()}",
         "retry": {"attempts": 1, "budget_ratio": 1.0}, "circuit_breaker": {"failure_threshold": 2}},
        {"id": "tight", "path": "/tight", "target": backend.url, "rate_limit": {"requests_per_minute": 1}},
        {"id": "guarded", "path": "/guarded", "target": backend.url, "auth": {"methods": ["api_key"]},
         "cache": {"enabled": False}},
    ]


def _families(text: str) -> dict[str, list]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _family_names() -> set[str]:
    return {family.name for family in REGISTRY.collect()}


def test_metrics_scrape_after_mixed_traffic_shows_every_family(backend: BackendServer, key_prefix: str) -> None:
    with RedisProcess() as redis_server:
        config = {"redis": {"url": redis_server.url, "prefix": key_prefix}, "router": {"routes": _routes(backend)}}
        with GatewayProcess(config) as gateway, httpx.Client(base_url=gateway.url, timeout=5) as client:
            for _ in range(3):
                assert client.get("/ok/a").status_code == 200  # MISS, then HITs
            assert client.post("/ok/b", content=b"x").status_code == 200  # not cacheable: BYPASS
            assert client.get("/slow", params={"seconds": 1}).status_code == 504
            assert [client.get("/dead").status_code for _ in range(3)] == [502, 502, 503]  # then open
            assert client.get("/nowhere").status_code == 404
            assert [client.get("/tight").status_code for _ in range(2)] == [200, 429]
            assert client.get("/guarded").status_code == 401
            if "apigw_health_checks" not in NOT_YET_WIRED:  # a probe every 0.2 s: wait for one
                wait_for(lambda: "apigw_health_checks_total{" in client.get("/_gateway/metrics").text,
                         timeout=5, what="a health-check probe")
            redis_server.stop()  # the store goes away: the pipeline and the cache count store errors
            assert client.get("/ok/c").status_code == 200
            scrape = client.get("/_gateway/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")

    families = _families(scrape.text)
    assert set(families) >= _family_names()
    for name in _family_names() - NOT_YET_WIRED:
        assert families[name], f"{name} has no samples after mixed traffic"

    def value(family: str, sample: str, **labels: str) -> float:
        return sum(s.value for s in families[family] if s.name == sample
                   and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("apigw_requests", "apigw_requests_total", route="ok", status="200") == 5
    assert value("apigw_requests", "apigw_requests_total", route="slow", status="504") == 1
    assert value("apigw_requests", "apigw_requests_total", route="dead", status="502") == 2
    assert value("apigw_requests", "apigw_requests_total", route="dead", status="503") == 1
    assert value("apigw_upstream_retries", "apigw_upstream_retries_total", route="dead") >= 1
    assert value("apigw_circuit_transitions", "apigw_circuit_transitions_total", circuit="dead", to_state="open") == 1
    assert value("apigw_circuit_state", "apigw_circuit_state", circuit="dead") == 2
    assert value("apigw_requests", "apigw_requests_total", route="(none)", status="404") == 1
    assert value("apigw_requests", "apigw_requests_total", route="tight", status="429") == 1
    assert value("apigw_rate_limited", "apigw_rate_limited_total", route="tight") == 1
    assert value("apigw_auth", "apigw_auth_total", route="guarded", method="GET", outcome="missing") == 1
    assert value("apigw_cache_lookups", "apigw_cache_lookups_total", route="ok", result="hit") == 2
    assert value("apigw_cache_stores_refused", "apigw_cache_stores_refused_total", route="ok") == 0  # shown before any
    assert value("apigw_store_errors", "apigw_store_errors_total", component="pipeline") >= 1
    # The backend time is apart from the gateway's own: the 0.2 s timeout is the backend's (the
    # event loop's timer may fire a fraction of a millisecond before perf_counter says 0.2 s).
    assert value("apigw_backend_duration_seconds", "apigw_backend_duration_seconds_count", route="slow") == 1
    assert value("apigw_backend_duration_seconds", "apigw_backend_duration_seconds_sum", route="slow") >= 0.19
    assert value("apigw_gateway_overhead_seconds", "apigw_gateway_overhead_seconds_sum", route="slow") < 0.2
    # Cache hits never reach a backend: 5 answers on "ok", only the misses and the bypasses were sent.
    assert value("apigw_gateway_overhead_seconds", "apigw_gateway_overhead_seconds_count", route="ok") == 5
    assert value("apigw_backend_duration_seconds", "apigw_backend_duration_seconds_count", route="ok") == 3


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_access_log_has_one_json_line_per_request_and_can_be_turned_off(backend: BackendServer) -> None:
    config = {"router": {"routes": _routes(backend)}}
    with GatewayProcess(config) as gateway, httpx.Client(base_url=gateway.url, timeout=5) as client:
        answers = [client.get("/ok/x"), client.get("/ok/x", headers={"X-Client-ID": "alice", "X-Request-ID": "rid-1"}),
                   client.get("/dead"), client.get("/nowhere")]
        client.get("/_gateway/health")  # the control plane is not in the access log
        deadline = time.monotonic() + 5
        while len(_json_lines(gateway.log())) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = _json_lines(gateway.log())
    assert [line["request_id"] for line in lines] == [a.headers["x-request-id"] for a in answers]
    assert lines[1]["request_id"] == "rid-1"
    assert [line["status"] for line in lines] == [200, 200, 502, 404]
    assert [line["route"] for line in lines] == ["ok", "ok", "dead", None]
    assert [line["cache"] for line in lines] == ["MISS", "HIT", "MISS", None]
    assert lines[0]["client"] == "ip:127.0.0.1" and lines[0]["method"] == "GET" and lines[0]["path"] == "/ok/x"
    assert lines[0]["backend_ms"] > 0 and lines[1]["backend_ms"] is None  # a hit never reached the backend
    assert all(line["duration_ms"] >= line["overhead_ms"] >= 0 for line in lines)
    assert lines[0]["time"].endswith("Z")
    assert lines[1]["client"] == "alice"
    assert lines[1]["rate_limit"]["outcome"] == "allowed" and lines[1]["rate_limit"]["remaining"] >= 0

    with GatewayProcess(config, env={"API_GATEWAY_ACCESS_LOG": "false"}) as quiet:
        assert httpx.get(quiet.url + "/ok/x").status_code == 200
        time.sleep(0.2)
        assert _json_lines(quiet.log()) == []


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def test_tracing_is_off_by_default_and_the_clients_traceparent_passes_untouched(backend: BackendServer) -> None:
    assert not any(name.startswith("OTEL_") for name in os.environ)
    with GatewayProcess({"router": {"routes": _routes(backend)}}) as gateway:
        header, _, _ = _traceparent()
        seen = httpx.get(gateway.url + "/ok/t", headers={"traceparent": header}).json()["headers"]
    assert seen["traceparent"] == header
    assert "opentelemetry" not in gateway.log().lower()


def test_tracing_on_with_otel_variables_propagates_traceparent_to_the_backend(backend: BackendServer) -> None:
    pytest.importorskip("opentelemetry.sdk")
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "apigw-test", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with GatewayProcess({"router": {"routes": _routes(backend)}}, env=env) as gateway:
        header, trace_id, client_span = _traceparent()
        seen = httpx.get(gateway.url + "/ok/t", headers={"traceparent": header}).json()["headers"]
        fresh = httpx.get(gateway.url + "/ok/u").json()["headers"]
        gateway.stop()  # flushes the batched spans
    version, sent_trace, sent_span, flags = seen["traceparent"].split("-")
    assert (version, sent_trace, flags) == ("00", trace_id, "01")
    assert sent_span != client_span  # the backend's parent is the gateway's span, child of the client's
    assert len(fresh["traceparent"].split("-")[1]) == 32  # a request without one starts a trace
    log = gateway.log()
    assert f'"trace_id": "0x{trace_id}"' in log
    assert f'"span_id": "0x{sent_span}"' in log
    assert f'"parent_id": "0x{client_span}"' in log
    assert '"service.name": "apigw-test"' in log
    assert '"http.route": "ok"' in log
