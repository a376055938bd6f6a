"""/_gateway/status: what the status page polls, after real traffic through two replicas' worth
of gateway on one Redis; guarded by the admin token; a failing component spoils only its part."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from app.config import parse_config
from tests.support import BackendServer, GatewayThread, wait_for

TOKEN = "status-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _config(redis_url: str, prefix: str, a: str, b: str, token: str | None = TOKEN):  # type: ignore[no-untyped-def]
    return parse_config({
        "redis": {"url": redis_url, "prefix": prefix},
        "admin": {"token": token},
        # The test's clients name themselves with X-Client-ID from this machine.
        "rate_limiter": {"client_id_trusted_from": ["127.0.0.0/8"]},
        "router": {"routes": [
            {"id": "cached", "path": "/cached/*", "target": a, "strip_prefix": True, "cache": {"ttl": 30}},
            {"id": "api", "path": "/api/*", "targets": [{"url": a}, {"url": b}], "strip_prefix": True,
             "cache": {"enabled": False}},
            {"id": "limited", "path": "/limited/*", "target": b, "strip_prefix": True, "cache": {"enabled": False},
             "rate_limit": {"requests_per_minute": 3}},
            {"id": "fragile", "path": "/fragile/*", "target": b, "strip_prefix": True, "cache": {"enabled": False},
             "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": 60}},
        ]},
    }, {})


@pytest.fixture
def pair(redis_url: str, key_prefix: str, redis_client: object, backend: BackendServer,
         backend_b: BackendServer) -> Iterator[tuple[GatewayThread, GatewayThread]]:
    config = _config(redis_url, key_prefix, backend.url, backend_b.url)
    with GatewayThread(config) as one, GatewayThread(config) as two:
        yield one, two


def _status(gw: GatewayThread) -> dict:
    answer = httpx.get(f"{gw.url}/_gateway/status", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_status_shows_the_fleet_after_traffic_through_two_replicas(pair: tuple[GatewayThread, GatewayThread]) -> None:
    one, two = pair
    for i in range(6):  # alice: one miss, then hits, on either replica
        gw = one if i % 2 else two
        assert httpx.get(f"{gw.url}/cached/report", headers={"X-Client-ID": "alice"}).status_code == 200
    for _ in range(3):
        httpx.get(f"{two.url}/api/x", headers={"X-Client-ID": "bob"})
    httpx.get(f"{one.url}/api/x", headers={"X-Client-ID": "carol"})

    def clients_seen() -> bool:
        items = _status(one)["clients"]["items"]
        return [(c["client_id"], c["requests"]) for c in items] == [("alice", 6), ("bob", 3), ("carol", 1)]
    wait_for(clients_seen, timeout=10, what="both replicas' counts in the busiest clients")

    status = _status(two)  # the other replica tells the same story
    assert [(c["client_id"], c["requests"]) for c in status["clients"]["items"]] == [
        ("alice", 6), ("bob", 3), ("carol", 1)]
    assert status["cache"]["available"] and (status["cache"]["hits"], status["cache"]["misses"]) == (5, 1)
    assert status["cache"]["hit_rate"] == pytest.approx(5 / 6)
    routes = {r["key"]: r for r in status["routes"]}
    assert set(routes) == {"cached", "api", "limited", "fragile"}
    assert [t["healthy"] for t in routes["api"]["targets"]] == [True, True]
    assert status["replica"]["store"] == "RedisStore" and status["replica"]["store_ok"] is True
    assert status["health"]["routes_count"] == 4


def test_status_shows_quotas_left_and_open_circuits(pair: tuple[GatewayThread, GatewayThread]) -> None:
    one, two = pair
    codes = [httpx.get(f"{gw.url}/limited/x", headers={"X-Client-ID": "dave"}).status_code
             for gw in (one, two, one, two)]
    assert codes == [200, 200, 200, 429]
    for gw in (one, two):
        assert httpx.get(f"{gw.url}/fragile/status/500").status_code == 500
    assert httpx.get(f"{two.url}/fragile/ok").status_code == 503

    def dave() -> dict | None:
        return next((c for c in _status(one)["clients"]["items"] if c["client_id"] == "dave"), None)
    wait_for(lambda: dave() is not None, timeout=10, what="dave counted")
    quota = dave()["quota"]  # type: ignore[index]
    # Refused requests are not counted (docs/design.md): 3 of the client's own 60 a minute are gone.
    assert quota["minute"] == {"used": 3, "limit": 60, "remaining": 57}
    assert quota["hour"] == {"used": 3, "limit": 1000, "remaining": 997}
    (limited,) = quota["routes"]
    assert (limited["route"], limited["limit"], limited["remaining"]) == ("limited", 3, 0)
    # A minute of 60 one-second buckets: back to full within the minute and the bucket it began in.
    assert 0 < limited["reset_seconds"] <= 61
    # The circuit opened through two replicas is open on both.
    for gw in (one, two):
        circuits = {c["name"]: c for c in _status(gw)["circuits"]["items"]}
        assert circuits["fragile"]["state"] == "open"


def test_status_needs_the_admin_token(pair: tuple[GatewayThread, GatewayThread]) -> None:
    one, _ = pair
    url = f"{one.url}/_gateway/status"
    assert httpx.get(url).status_code == 401
    wrong = httpx.get(url, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "missing or wrong admin token"
    assert httpx.get(url, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    # The page itself holds no data: it is served to anyone, with a CSP that allows no outside asset.
    page = httpx.get(f"{one.url}/_gateway/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
    assert "http://" not in page.text and "https://" not in page.text
    assert httpx.get(f"{one.url}/_gateway", follow_redirects=False).headers["location"] == "/_gateway/"


def test_status_is_off_without_a_token(redis_url: str, key_prefix: str, redis_client: object,
                                       backend: BackendServer, backend_b: BackendServer) -> None:
    with GatewayThread(_config(redis_url, key_prefix, backend.url, backend_b.url, token=None)) as gw:
        answer = httpx.get(f"{gw.url}/_gateway/status", headers=AUTH)
        assert answer.status_code == 403 and "API_GATEWAY_ADMIN_TOKEN" in answer.json()["error"]


def test_a_failing_component_spoils_only_its_part(pair: tuple[GatewayThread, GatewayThread]) -> None:
    one, _ = pair

    async def broken() -> dict:
        raise RuntimeError("cache on fire")
    one.gateway.orchestrator.cache_manager.get_stats = broken  # type: ignore[method-assign]
    status = _status(one)
    assert status["cache"] == {"available": False, "error": "RuntimeError: cache on fire"}
    assert status["routes"] and status["clients"]["available"] is True


def test_status_answers_while_redis_is_down(backend: BackendServer, backend_b: BackendServer) -> None:
    from tests.support import RedisProcess

    with RedisProcess() as redis_server:
        config = _config(redis_server.url, "st", backend.url, backend_b.url)
        with GatewayThread(config) as gw:
            redis_server.stop()
            started = time.monotonic()
            status = _status(gw)
            assert time.monotonic() - started < 5  # nothing waits out a timeout
            assert status["replica"]["store_ok"] is False
            assert status["cache"]["available"] is False and status["clients"]["available"] is False
            assert [r["key"] for r in status["routes"]] == ["cached", "api", "limited", "fragile"]
