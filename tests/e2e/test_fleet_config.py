"""Config sync across a fleet: three replicas as processes on one real Redis, a real backend."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support import BackendServer, replicas, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

TOKEN = "fleet-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _config(redis_url: str, prefix: str, backend: BackendServer) -> dict:
    return {
        "redis": {"url": redis_url, "prefix": prefix},
        "admin": {"token": TOKEN},
        # The polls below come from one address every 20 ms: the default 60 a minute would answer
        # them 429 on a slow run, and limits are not what this test is about.
        "rate_limiter": {"enabled": False},
        "router": {"routes": [{"id": "base", "path": "/base", "target": backend.url}]},
    }


def _serves_everywhere(urls: list[str], path: str, status: int, deadline: float) -> dict[str, float]:
    """Poll each replica until ``path`` answers ``status``; when each did, in seconds from now."""
    started = time.monotonic()
    seen: dict[str, float] = {}
    with httpx.Client(timeout=1) as client:
        while len(seen) < len(urls) and time.monotonic() - started < deadline:
            for url in urls:
                if url not in seen and client.get(url + path).status_code == status:
                    seen[url] = time.monotonic() - started
            time.sleep(0.02)
    return seen


def test_route_added_on_one_replica_serves_on_all_within_a_second_and_survives_restarts(
        redis_url: str, key_prefix: str, redis_client: object, backend: BackendServer) -> None:
    config = _config(redis_url, key_prefix, backend)
    with replicas(config, 3) as fleet:
        a, b, c = (replica.url for replica in fleet)
        assert httpx.get(b + "/added/x").status_code == 404

        answer = httpx.post(a + "/_gateway/routes", headers=AUTH, json={
            "id": "added", "path": "/added/*", "target": backend.url, "strip_prefix": True})
        assert answer.status_code == 201, answer.text
        version = answer.json()["version"]
        seen = _serves_everywhere([a, b, c], "/added/x", 200, deadline=5)
        print(f"route added through A served after: { {u[-5:]: round(s * 1000) for u, s in seen.items()} } ms")
        assert set(seen) == {a, b, c}
        assert max(seen.values()) < 1.0, seen
        assert httpx.get(c + "/added/deep/path").json()["path"] == "/deep/path"

        # Disabled through B: gone on A and C within a second too.
        assert httpx.post(b + "/_gateway/routes/added/disable", headers=AUTH).status_code == 200
        gone = _serves_everywhere([a, b, c], "/added/x", 404, deadline=5)
        assert set(gone) == {a, b, c} and max(gone.values()) < 1.0, gone
        assert httpx.post(c + "/_gateway/routes/added/enable", headers=AUTH).status_code == 200
        back = _serves_everywhere([a, b, c], "/added/x", 200, deadline=5)
        assert set(back) == {a, b, c} and max(back.values()) < 1.0, back

        shown = [httpx.get(u + "/_gateway/config", headers=AUTH) for u in (a, b, c)]
        assert all(s.status_code == 200 for s in shown), [(s.status_code, s.text, fleet[0].log()) for s in shown]
        versions = {s.json()["version"] for s in shown}
        assert versions == {version + 2}

        for replica in fleet:
            replica.stop()
        for replica in fleet:
            replica.start(wait=False)
        for replica in fleet:
            wait_for(replica._healthy, timeout=30, what=f"replica on {replica.port} after restart")

        for url in (a, b, c):
            assert httpx.get(url + "/added/x").status_code == 200
            shown = httpx.get(url + "/_gateway/config", headers=AUTH).json()
            assert shown["version"] == version + 2
            assert "added" in shown["changed_routes"]
            assert [r["id"] for r in shown["config"]["router"]["routes"]] == ["base", "added"]


def test_a_replica_started_after_a_change_and_one_that_missed_the_message_catch_up(
        redis_url: str, key_prefix: str, redis_client: object, backend: BackendServer) -> None:
    import redis as redis_lib

    config = _config(redis_url, key_prefix, backend)
    with replicas(config, 2) as fleet:
        a, b = (replica.url for replica in fleet)
        assert httpx.delete(a + "/_gateway/routes/base", headers=AUTH).status_code == 200
        assert set(_serves_everywhere([a, b], "/base", 404, deadline=5)) == {a, b}

        # Published on a channel nobody listens to: only the version poll can find this change.
        client = redis_lib.Redis.from_url(redis_url)
        script = (__import__("pathlib").Path(__file__).parents[2] / "lua" / "config_change.lua").read_text()
        keys = [f"{key_prefix}:config:{{config}}:routes", f"{key_prefix}:config:{{config}}:version"]
        client.eval(script, 2, *keys, "nobody-listens", "set", "base", "")
        client.close()
        seen = _serves_everywhere([a, b], "/base", 200, deadline=5)
        assert set(seen) == {a, b} and max(seen.values()) < 1.0, seen
