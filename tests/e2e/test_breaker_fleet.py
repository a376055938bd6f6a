"""Circuit breakers and health checks across replicas as processes, on one Redis, with real backends."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from tests.support import BackendServer, GatewayProcess, replicas, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

TOKEN = "breaker-test-admin-token"


def _config(redis_url: str, prefix: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "redis": {"url": redis_url, "prefix": prefix},
        "admin": {"token": TOKEN},
        # These tests count what reaches the backends: nothing may answer from cache or refuse a client.
        "cache": {"enabled": False},
        "rate_limiter": {"default": {"requests_per_minute": 1_000_000, "requests_per_hour": 10_000_000}},
        "router": {"routes": routes},
    }


def _circuit(gateway: GatewayProcess, name: str) -> dict[str, Any]:
    status = httpx.get(f"{gateway.url}/_gateway/status", headers={"Authorization": f"Bearer {TOKEN}"},
                       timeout=5).json()
    for item in status["circuits"]["items"]:
        if item["name"] == name:
            return {"state": item["state"], **item["stats"]}
    return {"state": "unknown"}


def _all_in(gateways: list[GatewayProcess], name: str, state: str) -> bool:
    return all(_circuit(g, name)["state"] == state for g in gateways)


def test_fleet_opens_after_exactly_the_threshold_probes_once_and_closes_everywhere(
        backend: BackendServer, redis_url: str, key_prefix: str, redis_client: redis.Redis) -> None:
    route = {"id": "svc", "path": "/svc/*", "target": backend.url, "strip_prefix": True,
             "circuit_breaker": {"failure_threshold": 5, "recovery_timeout": 8, "success_threshold": 3,
                                 "half_open_max_calls": 1}}
    with replicas(_config(redis_url, key_prefix, [route]), 3) as gateways:
        # Each replica knows the (closed) circuit before the storm.
        for gateway in gateways:
            assert httpx.get(f"{gateway.url}/svc/ok").status_code == 200
        backend.reset_hits()

        # 5 failures spread over the replicas open the circuit for all of them.
        for i in range(5):
            assert httpx.get(f"{gateways[i % 3].url}/svc/status/500").status_code == 500
        wait_for(lambda: _all_in(gateways, "svc", "open"), timeout=5, interval=0.01, what="open everywhere")
        for gateway in gateways:
            for _ in range(3):
                refused = httpx.get(f"{gateway.url}/svc/status/500")
                assert refused.status_code == 503 and refused.json()["error"] == "circuit open", \
                    (refused.text, [_circuit(g, "svc") for g in gateways], [g.log()[-1500:] for g in gateways])
                assert int(refused.headers["retry-after"]) >= 1
        assert backend.hits == {"/status/500": 5}
        key = f"{key_prefix}:cb:{{svc}}"
        assert redis_client.hget(key, "opened") == b"1"

        # How long each replica took to learn of the transition, from the moment the script made it.
        changed_at = int(redis_client.hget(key, "changed_at")) / 1e6
        delays = [_circuit(g, "svc")["state_since"] - changed_at for g in gateways]
        print(f"\nopen transition learned by the 3 replicas after "
              f"{', '.join(f'{d * 1000:.1f} ms' for d in delays)} (the one that made it included)")
        assert max(delays) < 0.1

        # After recovery_timeout (8 s, so that a loaded machine finishes the checks above first),
        # 12 concurrent requests over the fleet: exactly one probe gets through.
        time.sleep(max(0.0, changed_at + 8.1 - time.time()))
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda i: httpx.get(f"{gateways[i % 3].url}/svc/slow?seconds=0.8",
                                                        timeout=10).status_code, range(12)))
        assert sorted(answers) == [200] + [503] * 11
        assert backend.hits.get("/slow") == 1

        # success_threshold = 3: two more probes (one at a time) close the circuit on every replica.
        for i in range(2):
            assert httpx.get(f"{gateways[i].url}/svc/ok").status_code == 200
        wait_for(lambda: _all_in(gateways, "svc", "closed"), timeout=5, interval=0.01, what="closed everywhere")
        backend.reset_hits()
        for gateway in gateways:
            assert httpx.get(f"{gateway.url}/svc/ok").status_code == 200
        assert backend.hits == {"/ok": 3}


def test_an_unhealthy_target_is_skipped_by_the_fleet_and_comes_back(
        redis_url: str, key_prefix: str) -> None:
    interval = 0.5
    with BackendServer("a") as a, BackendServer("b") as b:
        port_a = a.port
        route = {"id": "pool", "path": "/pool/*", "strip_prefix": True,
                 "targets": [{"url": a.url}, {"url": b.url}],
                 "health_check": {"path": "/healthz", "interval": interval, "timeout": 0.3,
                                  "healthy_threshold": 1, "unhealthy_threshold": 1},
                 "circuit_breaker": {"failure_threshold": 1000}}
        with replicas(_config(redis_url, key_prefix, [route]), 2) as gateways:
            for gateway in gateways:
                for _ in range(2):
                    assert httpx.get(f"{gateway.url}/pool/x").status_code == 200
            assert a.hits.get("/x") and b.hits.get("/x")

            # One replica's checks serve both: about one probe per interval, not one per replica.
            b.reset_hits()
            time.sleep(4 * interval)
            probes = b.hits.get("/healthz", 0)
            print(f"\nhealth probes to one target in {4 * interval:.1f} s from 2 replicas: {probes}")
            assert 2 <= probes <= 6

            a.stop()
            stopped = time.monotonic()
            time.sleep(interval + 0.3)  # one interval, and the time to announce it
            statuses = [httpx.get(f"{gateways[i % 2].url}/pool/x").status_code for i in range(20)]
            assert statuses == [200] * 20, f"{time.monotonic() - stopped:.2f}s after the stop: {statuses}"

            with BackendServer("a", port=port_a) as again:
                time.sleep(interval + 0.3)
                for i in range(20):
                    assert httpx.get(f"{gateways[i % 2].url}/pool/x").status_code == 200
                assert again.hits.get("/x", 0) >= 8  # back in the rotation on both replicas
