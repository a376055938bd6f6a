"""Rate limits through the admin API: tiers, client configs, API keys, stats and reset, on real
backends; API keys and client configs made through one replica work on another (real Redis)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.config import parse_config
from tests.support import BackendServer, GatewayThread, wait_for

TOKEN = "ratelimit-admin-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _config(backend: BackendServer, **redis: object) -> object:
    return parse_config({
        "admin": {"token": TOKEN},
        "redis": redis,
        "rate_limiter": {"default": {"requests_per_minute": 100, "requests_per_hour": 1000},
                         "tiers": {"gold": {"requests_per_minute": 1000}, "tiny": {"requests_per_minute": 2}},
                         "clients": {"fixed": {"tier": "gold"}},
                         # The test's clients name themselves with X-Client-ID from this machine.
                         "client_id_trusted_from": ["127.0.0.0/8"]},
        "router": {"routes": [{"path": "/r/*", "target": backend.url, "cache": {"enabled": False}}]},
    }, {})


@pytest.fixture
def gateway(backend: BackendServer) -> Iterator[GatewayThread]:
    with GatewayThread(_config(backend)) as server:
        yield server


def _admin(gateway: GatewayThread, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(method, gateway.url + "/_gateway" + path, headers=AUTH, **kwargs)  # type: ignore[arg-type]


def test_tiers_and_configured_clients(gateway: GatewayThread) -> None:
    tiers = _admin(gateway, "GET", "/ratelimits/tiers").json()
    assert tiers["default"]["requests_per_minute"] == 100
    assert tiers["tiers"]["gold"] == {"requests_per_second": None, "requests_per_minute": 1000,
                                      "requests_per_hour": 1000, "requests_per_day": None, "burst_size": None}
    clients = _admin(gateway, "GET", "/clients").json()["clients"]
    assert clients == [{"client_id": "fixed", "source": "config", "config": {"tier": "gold"},
                        "limits": tiers["tiers"]["gold"], "stats": None}]


def test_client_limits_set_used_reset_and_removed(gateway: GatewayThread) -> None:
    answer = _admin(gateway, "PUT", "/clients/carol/limits", json={"tier": "tiny"})
    assert answer.status_code == 200
    assert answer.json()["source"] == "api" and answer.json()["limits"]["requests_per_minute"] == 2
    statuses = [httpx.get(gateway.url + "/r/x", headers={"X-Client-ID": "carol"}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    shown = _admin(gateway, "GET", "/clients/carol").json()
    assert shown["stats"] == {"requests_this_minute": 2, "requests_this_hour": 2, "burst_tokens": 0}
    assert _admin(gateway, "GET", "/clients/carol/stats").json()["requests_this_minute"] == 2

    assert _admin(gateway, "POST", "/clients/carol/reset").json()["removed"] >= 1
    assert httpx.get(gateway.url + "/r/x", headers={"X-Client-ID": "carol"}).status_code == 200

    assert _admin(gateway, "DELETE", "/clients/carol/limits").json()["source"] == "default"
    assert _admin(gateway, "DELETE", "/clients/carol/limits").status_code == 404
    assert _admin(gateway, "GET", "/clients/carol").json()["limits"]["requests_per_minute"] == 100


@pytest.mark.parametrize(("body", "field"), [
    ({"tier": "platinum"}, "body.tier"),
    ({"requests_per_minute": 0}, "body.requests_per_minute"),
    ({"requests_per_minute": "lots"}, "body.requests_per_minute"),
    ({"burst": 5}, "body.burst"),
    ({"burst_size": 52312306338498818934308864}, "body.burst_size"),  # found by schemathesis (a 500)
])
def test_bad_client_limits_are_400_naming_the_field(gateway: GatewayThread, body: dict, field: str) -> None:
    answer = _admin(gateway, "PUT", "/clients/dave/limits", json=body)
    assert answer.status_code == 400
    assert [f["field"] for f in answer.json()["fields"]] == [field]


def test_api_key_is_shown_once_and_only_its_hash_is_kept(gateway: GatewayThread) -> None:
    created = _admin(gateway, "POST", "/api-keys", json={"client_id": "erin", "tier": "tiny", "roles": ["ops"]})
    assert created.status_code == 201
    key, digest = created.json()["key"], created.json()["hash"]
    assert len(key) >= 32
    listed = _admin(gateway, "GET", "/api-keys").json()
    assert listed == [{"hash": digest, "client_id": "erin", "tier": "tiny", "roles": ["ops"], "source": "api"}]
    assert key not in _admin(gateway, "GET", "/api-keys").text
    assert key not in _admin(gateway, "GET", "/config").text
    memory = gateway.gateway.orchestrator.store.db  # everything the memory store holds
    assert key.encode() not in repr([memory.get(k) for k in memory.keys()]).encode()

    statuses = [httpx.get(gateway.url + "/r/k", headers={"X-API-Key": key}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # the key's client, on the key's tier
    assert _admin(gateway, "GET", "/clients/erin/stats").json()["requests_this_minute"] == 2

    assert _admin(gateway, "DELETE", f"/api-keys/{digest}").status_code == 204
    assert _admin(gateway, "DELETE", f"/api-keys/{digest}").status_code == 404
    assert _admin(gateway, "GET", "/api-keys").json() == []
    assert _admin(gateway, "POST", "/api-keys", json={"client_id": "x", "tier": "nope"}).status_code == 400


@pytest.mark.redis
def test_key_and_limits_made_through_one_replica_work_on_another(
        backend: BackendServer, redis_url: str, key_prefix: str, redis_client: object) -> None:
    config = _config(backend, url=redis_url, prefix=key_prefix)
    with GatewayThread(config) as a, GatewayThread(config) as b:
        key = _admin(a, "POST", "/api-keys", json={"client_id": "frank"}).json()["key"]
        assert _admin(a, "PUT", "/clients/frank/limits", json={"requests_per_minute": 3}).status_code == 200
        # Replica B learns both through pub/sub (milliseconds; bounded here for a loaded machine).
        wait_for(lambda: _admin(b, "GET", "/clients/frank").json()["limits"]["requests_per_minute"] == 3
                 and len(_admin(b, "GET", "/api-keys").json()) == 1, timeout=2, what="replica B in sync")
        statuses = [httpx.get(server.url + "/r/x", headers={"X-API-Key": key}).status_code for server in (b, a, b, a)]
        assert statuses == [200, 200, 200, 429]  # one count for the fleet, the key known to both
        assert _admin(b, "GET", "/clients/frank").json()["stats"]["requests_this_minute"] == 3
        assert _admin(b, "POST", "/clients/frank/reset").status_code == 200
        assert httpx.get(a.url + "/r/x", headers={"X-API-Key": key}).status_code == 200
