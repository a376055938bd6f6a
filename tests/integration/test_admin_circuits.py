"""Circuits by hand through the admin API: lua/breaker_force.lua and its twin, and a circuit
opened through one replica refusing on another (real Redis, real backend)."""

from __future__ import annotations

import httpx
import pytest

from app.config import parse_config
from app.store import Store
from tests.support import BackendServer, GatewayThread, wait_for

TOKEN = "circuit-admin-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_force_moves_the_breaker_and_bumps_its_generation(store: Store) -> None:
    key = store.key("cb", "r1")
    state, gen = 1, 2
    opened = await store.call("breaker_force", [key], ["open", 5000])
    assert [opened[0], opened[state], opened[gen], opened[3], opened[5]] == [1, b"open", 1, 0, 1]
    assert 4990 <= opened[4] <= 5000
    assert (await store.call("breaker_state", [key]))[state] == b"open"
    closed = await store.call("breaker_force", [key], ["closed", 0])
    assert (closed[state], closed[gen], closed[4]) == (b"closed", 2, 0)
    await store.call("breaker_force", [key], ["open", 1000])
    assert (await store.hgetall(key))[b"opened"] == b"2"
    reset = await store.call("breaker_force", [key], ["reset", 0])
    assert (reset[state], reset[gen]) == (b"closed", 4)
    assert (await store.hgetall(key))[b"opened"] == b"0"


def _config(backend: BackendServer, **redis: object) -> object:
    return parse_config({"admin": {"token": TOKEN}, "redis": redis, "router": {"routes": [
        {"id": "svc", "path": "/svc/*", "target": backend.url, "cache": {"enabled": False},
         "fallback": {"status": 503, "body": {"fallback": True}}}]}}, {})


def _admin(gateway: GatewayThread, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(method, gateway.url + "/_gateway" + path, headers=AUTH, **kwargs)  # type: ignore[arg-type]


def test_list_open_close_reset_on_one_replica(backend: BackendServer) -> None:
    with GatewayThread(_config(backend)) as gateway:
        listed = _admin(gateway, "GET", "/circuits").json()
        assert [(c["name"], c["state"]) for c in listed] == [("svc", "closed")]  # listed before any request
        opened = _admin(gateway, "POST", "/circuits/svc/open", json={"seconds": 30})
        assert opened.status_code == 200 and opened.json()["state"] == "open"
        backend.reset_hits()
        refused = httpx.get(gateway.url + "/svc/x")
        assert refused.status_code == 503 and refused.json() == {"fallback": True}
        assert backend.hits == {}
        assert _admin(gateway, "POST", "/circuits/svc/close").json()["state"] == "closed"
        assert httpx.get(gateway.url + "/svc/x").status_code == 200
        assert _admin(gateway, "POST", "/circuits/svc/reset").json()["state"] == "closed"
        assert _admin(gateway, "POST", "/circuits/nope/open").status_code == 404
        assert _admin(gateway, "POST", "/circuits/svc/open", json={"seconds": -1}).status_code == 400


@pytest.mark.redis
def test_a_circuit_opened_through_one_replica_refuses_on_the_other(
        backend: BackendServer, redis_url: str, key_prefix: str, redis_client: object) -> None:
    config = _config(backend, url=redis_url, prefix=key_prefix)
    with GatewayThread(config) as a, GatewayThread(config) as b:
        assert httpx.get(b.url + "/svc/x").status_code == 200  # B has its breaker in use
        assert _admin(a, "POST", "/circuits/svc/open").json()["state"] == "open"
        wait_for(lambda: _admin(b, "GET", "/circuits/svc").json()["state"] == "open", timeout=1,
                 what="replica B to learn of the open circuit")
        backend.reset_hits()
        assert httpx.get(b.url + "/svc/y").status_code == 503
        assert backend.hits == {}
        assert _admin(b, "POST", "/circuits/svc/close").status_code == 200
        wait_for(lambda: httpx.get(a.url + "/svc/z").status_code == 200, timeout=1, what="A closed again")
