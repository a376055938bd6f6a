"""Circuit breakers and retries in the request pipeline, against real backends."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.config import parse_config
from tests.support import BackendServer, GatewayThread, free_port, metric_value


def _gateway(routes: list[dict[str, Any]], **sections: Any) -> GatewayThread:
    # The cache would answer repeated GETs itself; these tests count what reaches the backends.
    sections.setdefault("cache", {"enabled": False})
    return GatewayThread(parse_config({"router": {"routes": routes}, **sections}, {}))


def _breakers(gateway: GatewayThread) -> dict[str, dict[str, Any]]:
    return gateway.gateway.orchestrator.router.get_health_status()["circuits"]


def test_open_circuit_answers_503_json_with_retry_after(backend: BackendServer) -> None:
    route = {"path": "/svc/*", "target": backend.url, "strip_prefix": True,
             "circuit_breaker": {"failure_threshold": 3, "recovery_timeout": 30}}
    with _gateway([route]) as gateway:
        for _ in range(3):
            assert httpx.get(f"{gateway.url}/svc/status/500").status_code == 500
        refused = httpx.get(f"{gateway.url}/svc/status/500")
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"] == "circuit open"
        assert 25 <= int(refused.headers["retry-after"]) <= 30
        assert httpx.get(f"{gateway.url}/svc/anything").status_code == 503  # the route's circuit
        assert backend.hits == {"/status/500": 3}
        assert _breakers(gateway)["* /svc/*"]["state"] == "open"


def test_4xx_answers_do_not_trip(backend: BackendServer) -> None:
    route = {"path": "/svc/*", "target": backend.url, "strip_prefix": True,
             "circuit_breaker": {"failure_threshold": 2}}
    with _gateway([route]) as gateway:
        for _ in range(5):
            assert httpx.get(f"{gateway.url}/svc/status/404").status_code == 404
        assert _breakers(gateway)["* /svc/*"]["state"] == "closed"
        assert backend.hits == {"/status/404": 5}


def test_configured_fallback_is_served_while_open(backend: BackendServer) -> None:
    route = {"path": "/svc/*", "target": backend.url, "strip_prefix": True,
             "circuit_breaker": {"failure_threshold": 1, "recovery_timeout": 30},
             "fallback": {"status": 200, "headers": {"X-Fallback": "yes"}, "body": {"items": []}}}
    with _gateway([route]) as gateway:
        assert httpx.get(f"{gateway.url}/svc/status/502").status_code == 502
        answer = httpx.get(f"{gateway.url}/svc/x")
        assert answer.status_code == 200 and answer.json() == {"items": []}
        assert answer.headers["x-fallback"] == "yes" and answer.headers["x-circuit-state"] == "open"
        assert "retry-after" not in answer.headers  # a success needs no retry
        assert backend.hits == {"/status/502": 1}


def test_fallback_service_registration_is_served(backend: BackendServer) -> None:
    route = {"id": "svc", "path": "/svc/*", "target": backend.url, "strip_prefix": True,
             "circuit_breaker": {"failure_threshold": 1, "recovery_timeout": 30}}
    with _gateway([route]) as gateway:
        manager = gateway.gateway.orchestrator.circuit_breaker_manager
        manager.fallback_service.register_fallback("svc", {"degraded": True}, status=503)
        assert httpx.get(f"{gateway.url}/svc/status/500").status_code == 500
        answer = httpx.get(f"{gateway.url}/svc/x")
        assert answer.status_code == 503 and answer.json() == {"degraded": True}
        assert answer.headers["retry-after"]


def test_each_target_has_its_own_circuit(backend: BackendServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    route = {"path": "/w/*", "targets": [{"url": backend.url}, {"url": dead}], "strip_prefix": True,
             "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": 30}}
    with _gateway([route]) as gateway:
        statuses = [httpx.get(f"{gateway.url}/w/ok").status_code for _ in range(10)]
        # Round-robin sends 2 to the dead target (502) before its circuit opens; then all go to the live one.
        assert statuses.count(502) == 2 and statuses[-6:] == [200] * 6
        circuits = _breakers(gateway)
        assert circuits[f"* /w/* @ {dead}"]["state"] == "open"
        assert circuits[f"* /w/* @ {backend.url}"]["state"] == "closed"


def test_all_targets_open_is_503(backend: BackendServer) -> None:
    dead_a, dead_b = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
    route = {"path": "/w", "targets": [{"url": dead_a}, {"url": dead_b}],
             "circuit_breaker": {"failure_threshold": 1, "recovery_timeout": 30}}
    with _gateway([route]) as gateway:
        assert [httpx.get(f"{gateway.url}/w").status_code for _ in range(2)] == [502, 502]
        refused = httpx.get(f"{gateway.url}/w")
        assert refused.status_code == 503 and refused.json()["error"] == "circuit open"


# -- retries ---------------------------------------------------------------------------------


def _retries(route: str) -> float:
    return metric_value("apigw_upstream_retries_total", route=route)


def test_get_that_fails_once_succeeds_through_a_retry(backend: BackendServer) -> None:
    route = {"id": "flaky-get", "path": "/flaky", "target": backend.url,
             "retry": {"attempts": 2, "backoff_base": 0.01}}
    with _gateway([route]) as gateway:
        before = _retries("flaky-get")
        answer = httpx.get(f"{gateway.url}/flaky?fail=1")
        assert answer.status_code == 200 and answer.json()["ok"] is True
        assert backend.hits == {"/flaky": 2}
        assert _retries("flaky-get") == before + 1


def test_post_is_never_retried(backend: BackendServer) -> None:
    route = {"path": "/flaky", "target": backend.url, "retry": {"attempts": 3, "backoff_base": 0.01}}
    with _gateway([route]) as gateway:
        assert httpx.post(f"{gateway.url}/flaky?fail=1", content=b"{}").status_code == 503
        assert backend.hits == {"/flaky": 1}


def test_post_cannot_be_configured_for_retries() -> None:
    from app.config import ConfigError

    with pytest.raises(ConfigError, match="only idempotent methods"):
        parse_config({"router": {"routes": [{"path": "/a", "target": "http://x",
                                             "retry": {"attempts": 1, "methods": ["GET", "POST"]}}]}}, {})


def test_no_retries_once_the_budget_is_spent(backend: BackendServer) -> None:
    route = {"path": "/s/*", "target": backend.url, "strip_prefix": True,
             "retry": {"attempts": 3, "backoff_base": 0.01, "budget_ratio": 0, "budget_min_retries": 2,
                       "statuses": [500]},
             "circuit_breaker": {"failure_threshold": 100}}
    with _gateway([route]) as gateway:
        for _ in range(4):
            assert httpx.get(f"{gateway.url}/s/status/500").status_code == 500
        # The first request spends both retries of the window; the next three go once each.
        assert backend.hits == {"/status/500": 3 + 3}


def test_budget_ratio_allows_a_share_of_requests(backend: BackendServer) -> None:
    route = {"path": "/s/*", "target": backend.url, "strip_prefix": True,
             "retry": {"attempts": 1, "backoff_base": 0, "budget_ratio": 0.5, "budget_min_retries": 0}}
    with _gateway([route]) as gateway:
        for _ in range(10):
            httpx.get(f"{gateway.url}/s/ok")  # healthy traffic fills the budget: 10 requests
        for _ in range(8):
            assert httpx.get(f"{gateway.url}/s/status/503").status_code == 503
        # 18 requests allow 9 retries at 50 %, but each retry must fit when it is made:
        # after n failing requests the share is (retries + 1) <= 0.5 * (10 + n).
        retried = backend.hits["/status/503"] - 8
        assert 0 < retried <= 9


def test_a_retried_request_counts_once_towards_the_breaker(backend: BackendServer) -> None:
    route = {"path": "/s/*", "target": backend.url, "strip_prefix": True,
             "retry": {"attempts": 2, "backoff_base": 0, "budget_min_retries": 10},
             "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": 30}}
    with _gateway([route]) as gateway:
        assert httpx.get(f"{gateway.url}/s/status/503").status_code == 503
        assert backend.hits == {"/status/503": 3}
        circuit = _breakers(gateway)["* /s/*"]
        assert circuit["state"] == "closed" and circuit["consecutive_failures"] == 1
        assert httpx.get(f"{gateway.url}/s/status/503").status_code == 503
        assert _breakers(gateway)["* /s/*"]["state"] == "open"


def test_breaker_works_on_local_state_when_redis_is_unreachable(backend: BackendServer) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    route = {"path": "/svc/*", "target": backend.url, "strip_prefix": True,
             "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": 30}}
    with _gateway([route], redis={"url": dead_redis},
                  rate_limiter={"failure_policy": "fail_open"}) as gateway:
        assert [httpx.get(f"{gateway.url}/svc/status/500").status_code for _ in range(2)] == [500, 500]
        refused = httpx.get(f"{gateway.url}/svc/status/500")
        assert refused.status_code == 503 and refused.json()["error"] == "circuit open"
        assert _breakers(gateway)["* /svc/*"]["local_only"] is True
        assert backend.hits == {"/status/500": 2}
