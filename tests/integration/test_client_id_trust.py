"""X-Client-ID can't be forged into more quota: from a peer outside ``client_id_trusted_from`` the
declared id is a sub-account of the peer's address, charged together with it in one script call
(issue 15, item 5). Real HTTP through the gateway, on a real Redis and a real Redis Cluster."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from app.config import parse_config
from app.store.slots import key_slot
from tests.redis_topologies import RedisClusterProcesses
from tests.support import BackendServer, GatewayThread

pytestmark = pytest.mark.redis

API_KEY = "k-0123456789abcdef-gold"


def _gateway(redis_url: str, backend: BackendServer, **rate_limiter: Any) -> GatewayThread:
    return GatewayThread(parse_config({
        "redis": {"url": redis_url, "prefix": f"t{uuid.uuid4().hex[:8]}"},
        "router": {"routes": [
            {"path": "/api/*", "target": backend.url},
            {"path": "/tight/*", "target": backend.url, "rate_limit": {"requests_per_minute": 2}},
        ]},
        "cache": {"enabled": False},
        "rate_limiter": {
            "default": {"requests_per_minute": 5, "requests_per_hour": None},
            "tiers": {"enterprise": {"requests_per_minute": 200}},
            "clients": {"enterprise_tier": {"tier": "enterprise"}},
            "api_keys": [{"key": API_KEY, "client_id": "acme", "tier": "enterprise"}],
            **rate_limiter,
        },
    }, {}))


def _statuses(client: httpx.Client, path: str, ids: list[str]) -> list[int]:
    return [client.get(path, headers={"X-Client-ID": i}).status_code for i in ids]


def test_rotating_client_ids_share_the_address_quota(redis_url: str, backend: BackendServer) -> None:
    with _gateway(redis_url, backend) as gateway, httpx.Client(base_url=gateway.url) as client:
        statuses = _statuses(client, "/api/a", [f"rotating-{n}" for n in range(30)])
        assert statuses == [200] * 5 + [429] * 25
        # A route's own limit is the address's too.
        assert _statuses(client, "/tight/a", [f"other-{n}" for n in range(4)]) == [429] * 4


def test_a_declared_id_divides_the_quota_and_keeps_its_own_count(redis_url: str, backend: BackendServer) -> None:
    with _gateway(redis_url, backend) as gateway, \
            httpx.Client(base_url=gateway.url) as client:
        gateway.run(gateway.gateway.orchestrator.rate_limiter.set_client_config("small", {"requests_per_minute": 2}))
        assert _statuses(client, "/api/a", ["small"] * 3) == [200, 200, 429]
        # The address still has 3 of its 5: another id may use them, "small" may not.
        assert _statuses(client, "/api/a", ["big"] * 4) == [200, 200, 200, 429]
        refused = client.get("/api/a", headers={"X-Client-ID": "big"})
        assert refused.status_code == 429 and refused.json()["limit"] == 5  # the address's


def test_naming_a_configured_client_raises_nothing(redis_url: str, backend: BackendServer) -> None:
    with _gateway(redis_url, backend) as gateway, httpx.Client(base_url=gateway.url) as client:
        answers = [client.get("/api/a", headers={"X-Client-ID": "enterprise_tier"}) for _ in range(7)]
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
        assert answers[0].headers["ratelimit-limit"] == "5"


def test_an_api_key_is_a_client_from_anywhere(redis_url: str, backend: BackendServer) -> None:
    with _gateway(redis_url, backend) as gateway, httpx.Client(base_url=gateway.url) as client:
        answers = [client.get("/api/a", headers={"X-API-Key": API_KEY}) for _ in range(8)]
        assert {a.status_code for a in answers} == {200}
        assert answers[0].headers["ratelimit-limit"] == "200"
        # ... and it spends nothing of its address's quota.
        assert _statuses(client, "/api/a", ["x"] * 6) == [200] * 5 + [429]


def test_trusted_peers_are_checked_on_the_address_trusted_proxies_resolve(
        redis_url: str, backend: BackendServer) -> None:
    with _gateway(redis_url, backend, trusted_proxies=["127.0.0.0/8"],
                  client_id_trusted_from=["198.51.100.0/24"]) as gateway, \
            httpx.Client(base_url=gateway.url) as client:
        def get(forwarded_for: str, client_id: str) -> int:
            return client.get("/api/a", headers={"X-Forwarded-For": forwarded_for,
                                                 "X-Client-ID": client_id}).status_code

        # From the trusted network, each id is a client of its own with its own limits.
        assert [get("198.51.100.7", f"svc-{n}") for n in range(8)] == [200] * 8
        assert [get("198.51.100.7", "enterprise_tier") for _ in range(8)] == [200] * 8
        # From elsewhere (the local peer itself is a proxy, not a trusted client), they share.
        assert [get("203.0.113.9", f"svc-{n}") for n in range(7)] == [200] * 5 + [429] * 2
        assert client.get("/api/a", headers={"X-Client-ID": "svc-0"}).status_code == 200  # 127.0.0.1's own


def test_sub_accounts_stay_on_one_slot_of_a_cluster(
        redis_cluster: RedisClusterProcesses, backend: BackendServer) -> None:
    with _gateway(redis_cluster.nodes[0].url, backend) as gateway, httpx.Client(base_url=gateway.url) as client:
        ids = [f"user{i}" for i in range(8)]
        assert len({key_slot(f"{{{i}}}") for i in ids}) > 1  # as clients of their own, they'd spread
        assert _statuses(client, "/api/a", ids) == [200] * 5 + [429] * 3
        limiter = gateway.gateway.orchestrator.rate_limiter
        plan = limiter.plan("user0", None, None, "ip:127.0.0.1")
        assert len(plan.keys) == 2 and len({key_slot(k) for k in plan.keys}) == 1
