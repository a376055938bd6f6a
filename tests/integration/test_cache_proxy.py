"""The cache in the pipeline, against real backends and a real Redis (and the memory store)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from app.cache.pending import cache_request
from app.config import parse_config
from app.pipeline.exchange import Exchange, Reply, error_reply
from app.pipeline.stage import Stage
from tests.support import BackendServer, GatewayThread, RedisProcess, metric_value


def _config(backend: BackendServer, redis_url: str | None, prefix: str, **cache: Any) -> Any:
    routes = [
        {"path": "/c/*", "target": backend.url, "strip_prefix": True},
        {"path": "/short/*", "target": backend.url, "strip_prefix": True, "cache": {"ttl": 1}},
        {"path": "/off/*", "target": backend.url, "strip_prefix": True, "cache": {"enabled": False}},
        {"path": "/any/*", "target": backend.url, "strip_prefix": True, "cache": {"statuses": [200, 404]}},
    ]
    raw: dict[str, Any] = {"router": {"routes": routes}, "cache": {"stale_grace": 30, **cache}}
    raw["redis"] = {"url": redis_url, "prefix": prefix}
    return parse_config(raw, {})


@pytest.fixture(params=["redis", "memory"])
def gateway(request: pytest.FixtureRequest, backend: BackendServer, key_prefix: str) -> Iterator[GatewayThread]:
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")  # removes the test's keys afterwards
    with GatewayThread(_config(backend, url, key_prefix)) as server:
        yield server


def _get(gateway: GatewayThread, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(gateway.url + path, timeout=10, **kwargs)


def test_miss_then_hit_byte_for_byte_with_age(gateway: GatewayThread, backend: BackendServer) -> None:
    first = _get(gateway, "/c/headers?X-Custom=1&b=2&a=1")
    assert first.headers["x-cache"] == "MISS"
    time.sleep(1.1)
    second = _get(gateway, "/c/headers?a=1&X-Custom=1&b=2")  # same query, other order: same entry
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    assert second.status_code == 200
    assert second.headers["x-custom"] == "1"
    assert second.headers["content-type"] == first.headers["content-type"]
    assert int(second.headers["age"]) >= 1
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert backend.hits["/headers"] == 1


def test_no_store_is_never_kept(gateway: GatewayThread, backend: BackendServer) -> None:
    for _ in range(3):
        answer = _get(gateway, "/c/headers?Cache-Control=no-store")
        assert answer.headers["x-cache"] == "MISS"
    assert backend.hits["/headers"] == 3


def test_private_is_never_kept(gateway: GatewayThread, backend: BackendServer) -> None:
    for _ in range(3):
        assert _get(gateway, "/c/headers?Cache-Control=private,max-age=60").headers["x-cache"] == "MISS"
    assert backend.hits["/headers"] == 3


def test_no_cache_response_is_not_kept(gateway: GatewayThread, backend: BackendServer) -> None:
    for _ in range(2):
        assert _get(gateway, "/c/headers?Cache-Control=no-cache").headers["x-cache"] == "MISS"
    assert backend.hits["/headers"] == 2


def test_authorization_only_with_public(gateway: GatewayThread, backend: BackendServer) -> None:
    auth = {"Authorization": "Bearer abc"}
    for _ in range(2):
        assert _get(gateway, "/c/headers/plain", headers=auth).headers["x-cache"] == "MISS"
    assert backend.hits["/headers/plain"] == 2
    answers = [_get(gateway, "/c/headers/public?Cache-Control=public,max-age=60", headers=auth)
               for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT"]
    # An entry kept for authorized requests is not served to anonymous ones (nor the reverse).
    anonymous = _get(gateway, "/c/headers/public?Cache-Control=public,max-age=60")
    assert anonymous.headers["x-cache"] == "MISS"
    assert backend.hits["/headers/public"] == 2


def test_vary_keys_by_the_named_request_headers(gateway: GatewayThread, backend: BackendServer) -> None:
    path = "/c/headers/v?Vary=Accept-Language"
    fr1 = _get(gateway, path, headers={"Accept-Language": "fr"})
    fr2 = _get(gateway, path, headers={"Accept-Language": "fr"})
    en1 = _get(gateway, path, headers={"Accept-Language": "en"})
    en2 = _get(gateway, path, headers={"Accept-Language": "en"})
    fr3 = _get(gateway, path, headers={"Accept-Language": "fr"})
    assert [a.headers["x-cache"] for a in (fr1, fr2, en1, en2, fr3)] == ["MISS", "HIT", "MISS", "HIT", "HIT"]
    assert fr2.json()["headers"]["Accept-Language"] == "fr"
    assert en2.json()["headers"]["Accept-Language"] == "en"
    assert fr3.content == fr1.content
    assert backend.hits["/headers/v"] == 2


def test_vary_values_differing_only_in_spacing_or_case_share_an_entry(gateway: GatewayThread,
                                                                       backend: BackendServer) -> None:
    path = "/c/headers/n?Vary=Accept-Language"
    first = _get(gateway, path, headers={"Accept-Language": "en, de"})
    same = _get(gateway, path, headers={"Accept-Language": "EN ,  de"})
    other = _get(gateway, path, headers={"Accept-Language": "de, en"})  # another order: another answer
    assert [a.headers["x-cache"] for a in (first, same, other)] == ["MISS", "HIT", "MISS"]
    assert same.content == first.content
    assert backend.hits["/headers/n"] == 2


def test_vary_star_is_not_kept(gateway: GatewayThread, backend: BackendServer) -> None:
    for _ in range(2):
        assert _get(gateway, "/c/headers/star?Vary=*").headers["x-cache"] == "MISS"
    assert backend.hits["/headers/star"] == 2


def test_set_cookie_is_not_kept(gateway: GatewayThread, backend: BackendServer) -> None:
    for _ in range(2):
        assert _get(gateway, "/c/headers/cookie?Set-Cookie=session%3Dabc").headers["x-cache"] == "MISS"
    assert backend.hits["/headers/cookie"] == 2


def test_max_age_shortens_the_ttl(gateway: GatewayThread, backend: BackendServer) -> None:
    path = "/c/headers/ma?Cache-Control=max-age=1"
    assert _get(gateway, path).headers["x-cache"] == "MISS"
    assert _get(gateway, path).headers["x-cache"] == "HIT"
    time.sleep(1.2)
    assert _get(gateway, path).headers["x-cache"] == "MISS"


def test_only_listed_statuses_are_kept(gateway: GatewayThread, backend: BackendServer) -> None:
    assert [_get(gateway, "/c/status/404").headers["x-cache"] for _ in range(2)] == ["MISS", "MISS"]
    assert [_get(gateway, "/any/status/404").headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]


def test_other_methods_bypass_and_head_is_served_from_get(gateway: GatewayThread, backend: BackendServer) -> None:
    assert httpx.post(gateway.url + "/c/thing", content=b"x").headers["x-cache"] == "BYPASS"
    assert httpx.head(gateway.url + "/c/thing").headers["x-cache"] == "MISS"  # HEAD never fills
    get = _get(gateway, "/c/thing")
    head = httpx.head(gateway.url + "/c/thing")
    assert (get.headers["x-cache"], head.headers["x-cache"]) == ("MISS", "HIT")
    assert head.content == b"" and head.headers["content-length"] == str(len(get.content))


def test_client_no_cache_refreshes_and_no_store_bypasses(gateway: GatewayThread, backend: BackendServer) -> None:
    assert _get(gateway, "/c/r").headers["x-cache"] == "MISS"
    refreshed = _get(gateway, "/c/r", headers={"Cache-Control": "no-cache"})
    assert refreshed.headers["x-cache"] == "MISS"
    assert _get(gateway, "/c/r", headers={"Cache-Control": "no-store"}).headers["x-cache"] == "BYPASS"
    hit = _get(gateway, "/c/r")
    assert hit.headers["x-cache"] == "HIT" and hit.content == refreshed.content
    assert backend.hits["/r"] == 3


def test_route_with_caching_off_has_no_x_cache(gateway: GatewayThread, backend: BackendServer) -> None:
    for _ in range(2):
        assert "x-cache" not in _get(gateway, "/off/x").headers
    assert backend.hits["/x"] == 2


def test_large_bodies_are_cached_whole(gateway: GatewayThread, backend: BackendServer) -> None:
    first = _get(gateway, "/c/bytes/300000")
    second = _get(gateway, "/c/bytes/300000")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.content == first.content and len(second.content) == 300000
    too_big = [_get(gateway, "/c/bytes/2000000").headers["x-cache"] for _ in range(2)]
    assert too_big == ["MISS", "MISS"]  # above cache.max_body_size (1 MiB)


def test_streamed_answers_are_kept_while_they_are_sent(gateway: GatewayThread, backend: BackendServer) -> None:
    first = _get(gateway, "/c/chunks/200000")
    assert "content-length" not in first.headers  # chunked from the backend, chunked to us
    assert first.headers["x-cache"] == "MISS" and len(first.content) == 200000
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # stored after the answer went out
        second = _get(gateway, "/c/chunks/200000")
        if second.headers["x-cache"] == "HIT":
            break
        time.sleep(0.05)
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    assert backend.hits["/chunks/200000"] == 1
    too_big = [_get(gateway, "/c/chunks/1200000").headers["x-cache"] for _ in range(2)]
    assert too_big == ["MISS", "MISS"]
    assert backend.hits["/chunks/1200000"] == 2


def test_stale_answer_when_the_backend_fails(backend: BackendServer, redis_url: str, key_prefix: str,
                                             redis_client: redis.Redis) -> None:
    spare = BackendServer("spare").start()
    config = _config(spare, redis_url, key_prefix)
    with GatewayThread(config) as gateway:
        fresh = _get(gateway, "/short/data")
        assert fresh.headers["x-cache"] == "MISS"
        spare.stop()
        time.sleep(1.1)  # past the route's 1 s ttl, inside the 30 s grace
        stale = _get(gateway, "/short/data")
        assert stale.status_code == 200
        assert stale.headers["x-cache"] == "STALE"
        assert stale.content == fresh.content
        # Past its grace nothing is served in its place: the failure shows.
        assert _get(gateway, "/short/other").status_code == 502


def test_stale_while_revalidate_answers_at_once_and_refreshes(backend: BackendServer, redis_url: str,
                                                              key_prefix: str, redis_client: redis.Redis) -> None:
    config = _config(backend, redis_url, key_prefix, stale_while_revalidate=30)
    config.router.routes.append(config.router.routes[0].model_copy(
        update={"path": "/swr/*", "cache": config.router.routes[0].cache.model_copy(update={"ttl": 2})}))
    with GatewayThread(config) as gateway:
        # ttl 2 s: the refreshed entry must still be fresh when looked at, on a loaded machine too
        first = _get(gateway, "/swr/headers/swr")
        time.sleep(2.1)
        stale = _get(gateway, "/swr/headers/swr")
        assert stale.headers["x-cache"] == "STALE" and stale.content == first.content
        deadline = time.monotonic() + 5
        while backend.hits.get("/headers/swr", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        refreshed = _get(gateway, "/swr/headers/swr")
        assert refreshed.headers["x-cache"] == "HIT"
        assert refreshed.json()["n"] == 2  # the background fetch's answer
        assert backend.hits["/headers/swr"] == 2


def test_redis_down_bypasses_never_500_and_never_waits(backend: BackendServer, key_prefix: str) -> None:
    with RedisProcess() as server:
        config = _config(backend, server.url, key_prefix)
        with GatewayThread(config) as gateway:
            assert _get(gateway, "/c/down").headers["x-cache"] == "MISS"
            assert _get(gateway, "/c/down").headers["x-cache"] == "HIT"
            server.stop()
            for _ in range(5):
                started = time.monotonic()
                answer = _get(gateway, "/c/down")
                assert time.monotonic() - started < 0.9  # nothing waits out the 1 s socket timeout
                assert answer.status_code == 200
                assert answer.headers["x-cache"] == "BYPASS"
            server.start()
            deadline = time.monotonic() + 5
            while _get(gateway, "/c/down").headers["x-cache"] == "BYPASS" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _get(gateway, "/c/down").headers["x-cache"] in ("HIT", "MISS")


def test_warm_paths_are_fetched_at_start_once_per_fleet_and_kept_fresh(
        backend: BackendServer, redis_url: str, key_prefix: str, redis_client: redis.Redis) -> None:
    routes = [{"path": "/warm/*", "target": backend.url, "strip_prefix": True, "cache": {"ttl": 3}}]
    raw = {"router": {"routes": routes}, "redis": {"url": redis_url, "prefix": key_prefix},
           "cache": {"warm": ["/warm/headers/w?x=1"]}}
    with GatewayThread(parse_config(raw, {})) as one, GatewayThread(parse_config(raw, {})) as two:
        deadline = time.monotonic() + 5
        while not backend.hits.get("/headers/w") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert backend.hits["/headers/w"] == 1  # two replicas started: one fetch
        verdicts = set()
        deadline = time.monotonic() + 4  # longer than the 3 s ttl: it must have been refreshed
        while time.monotonic() < deadline:
            for gateway in (one, two):
                verdicts.add(_get(gateway, "/warm/headers/w?x=1").headers["x-cache"])
            time.sleep(0.2)
        assert verdicts == {"HIT"}
        assert backend.hits["/headers/w"] == 2


class _RefuseMarked(Stage):
    """Stands in for the rate limiter: answers 429 before the cache's stage sees its lookup."""

    def admission_call(self, ex: Exchange, route: Any) -> None:
        return None

    async def admit(self, ex: Exchange, route: Any, store_reply: Any) -> Reply | None:
        return error_reply(429, "refused") if ex.header(b"x-refuse") else None


def test_a_request_refused_before_the_cache_frees_the_fill_lock(
        backend: BackendServer, redis_url: str, key_prefix: str, redis_client: redis.Redis) -> None:
    config = _config(backend, redis_url, key_prefix, lock_wait=3)
    server = GatewayThread(config)
    server.gateway.orchestrator.insert_stage(0, _RefuseMarked())
    with server as gateway:
        refused = _get(gateway, "/c/locked", headers={"X-Refuse": "1"})
        assert refused.status_code == 429 and refused.headers["x-cache"] == "BYPASS"
        started = time.monotonic()
        answer = _get(gateway, "/c/locked")
        assert time.monotonic() - started < 1.5  # did not wait out the 3 s lock of the refused one
        assert answer.headers["x-cache"] == "MISS"
        assert _get(gateway, "/c/locked").headers["x-cache"] == "HIT"


def test_lookups_are_counted_in_the_metrics(backend: BackendServer, key_prefix: str) -> None:
    def seen(result: str) -> float:
        return metric_value("apigw_cache_lookups_total", route="* /m/*", result=result)

    routes = [{"path": "/m/*", "target": backend.url, "strip_prefix": True}]
    before = {result: seen(result) for result in ("hit", "miss", "bypass")}
    with GatewayThread(parse_config({"router": {"routes": routes}}, {})) as gateway:
        _get(gateway, "/m/a")
        _get(gateway, "/m/a")
        httpx.post(gateway.url + "/m/a")
    assert {result: seen(result) - before[result] for result in before} == {"hit": 1, "miss": 1, "bypass": 1}


def test_waiters_go_to_the_backend_themselves_after_lock_wait(
        backend: BackendServer, redis_url: str, key_prefix: str, redis_client: redis.Redis) -> None:
    config = _config(backend, redis_url, key_prefix, lock_wait=0.5)
    with GatewayThread(config) as gateway:
        orchestrator = gateway.gateway.orchestrator
        cache = orchestrator.cache_manager
        route = orchestrator.router.match("/c/held", "GET").route
        ex = Exchange(method="GET", path="/c/held", raw_path=b"/c/held", query_string=b"", headers=[],
                      client_addr="127.0.0.1")
        entry_id = cache.strategy.cache_key(cache_request(ex, route))
        # Someone else (a stuck replica) holds the fill lock for 10 s.
        redis_client.set(cache.bucket("/c/held", b"").lock(entry_id), "stuck", px=10_000)
        started = time.monotonic()
        answer = _get(gateway, "/c/held")
        waited = time.monotonic() - started
        assert 0.4 < waited < 2.0
        assert answer.status_code == 200 and answer.headers["x-cache"] == "MISS"
        assert backend.hits["/held"] == 1
        assert _get(gateway, "/c/held").headers["x-cache"] == "HIT"  # and its answer was kept


def test_stale_answer_while_the_circuit_is_open(redis_url: str, key_prefix: str, redis_client: redis.Redis) -> None:
    spare = BackendServer("spare").start()
    routes = [{"path": "/cb/*", "target": spare.url, "strip_prefix": True, "cache": {"ttl": 1},
               "circuit_breaker": {"failure_threshold": 1, "recovery_timeout": 60}}]
    raw = {"router": {"routes": routes}, "redis": {"url": redis_url, "prefix": key_prefix},
           "cache": {"stale_grace": 30}}
    with GatewayThread(parse_config(raw, {})) as gateway:
        fresh = _get(gateway, "/cb/data")
        assert fresh.headers["x-cache"] == "MISS"
        spare.stop()
        time.sleep(1.1)
        assert _get(gateway, "/cb/data").headers["x-cache"] == "STALE"  # the backend failed: circuit opens
        stats = gateway.gateway.orchestrator.circuit_breaker_manager.get_all_stats()
        assert [s["state"] for s in stats.values()] == ["open"]
        started = time.monotonic()
        answer = _get(gateway, "/cb/data")  # refused by the open circuit, answered from the cache
        assert time.monotonic() - started < 1.0
        assert answer.status_code == 200 and answer.headers["x-cache"] == "STALE"
        assert answer.content == fresh.content
        no_entry = _get(gateway, "/cb/other")
        assert no_entry.status_code == 503 and no_entry.headers["x-cache"] == "MISS"


def test_a_transformed_route_refreshes_in_the_request_not_in_the_background(
        backend: BackendServer, redis_url: str, key_prefix: str, redis_client: redis.Redis) -> None:
    routes = [{"path": "/t/*", "target": backend.url, "strip_prefix": True, "cache": {"ttl": 1},
               "transform": {"response_headers": {"add": {"X-Transformed": "yes"}}}}]
    raw = {"router": {"routes": routes}, "redis": {"url": redis_url, "prefix": key_prefix},
           "cache": {"stale_while_revalidate": 30}}
    with GatewayThread(parse_config(raw, {})) as gateway:
        first = _get(gateway, "/t/headers/tr")
        assert first.headers["x-cache"] == "MISS" and first.headers["x-transformed"] == "yes"
        time.sleep(1.1)
        again = _get(gateway, "/t/headers/tr")  # expired: fetched through the whole pipeline
        assert again.headers["x-cache"] == "MISS" and again.headers["x-transformed"] == "yes"
        hit = _get(gateway, "/t/headers/tr")
        assert hit.headers["x-cache"] == "HIT" and hit.headers["x-transformed"] == "yes"
        assert hit.json()["n"] == 2
