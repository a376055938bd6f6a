"""Invalidation by unsafe requests (RFC 9111 section 4.4) across two replicas sharing one store:
on the memory store (both replicas on one) and on a real Redis (each replica its own connection),
in front of a real HTTP origin whose unsafe answers say what the test asks (status, Location,
Content-Location), as a hostile backend could."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from app.config import parse_config
from tests.replicas import Replica, replicas_on
from tests.support import AiohttpOrigin


class Origin(AiohttpOrigin):
    """GET: a cacheable JSON answer numbered per URI (a fresh one shows in ``n``), varying on
    Accept-Language. Any other method: the status and fields its X-Status, X-Location and
    X-Content-Location ask for."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: Counter[str] = Counter()

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._answer)

    async def _answer(self, request: web.Request) -> web.Response:
        await request.read()
        if request.method in ("GET", "HEAD"):
            uri = request.path_qs
            self.gets[uri] += 1
            return web.json_response({"uri": uri, "n": self.gets[uri]},
                                     headers={"Cache-Control": "max-age=300", "Vary": "Accept-Language"})
        headers = {}
        for asked, field in (("X-Location", "Location"), ("X-Content-Location", "Content-Location")):
            if asked in request.headers:
                headers[field] = request.headers[asked]
        return web.json_response({"done": request.method}, status=int(request.headers.get("X-Status", "200")),
                                 headers=headers)


@pytest.fixture
def origin() -> Any:
    server = Origin().start()
    yield server
    server.stop()


def _config(origin: Origin, prefix: str) -> Any:
    routes = [
        {"id": "tenant", "path": "/t/*", "host": "tenant.example", "target": origin.url},
        {"id": "all", "path": "/*", "target": origin.url},
    ]
    # Limits high enough for the tests' loops, but on: their call rides in the admission round trip.
    limits = {"requests_per_minute": 100_000, "requests_per_hour": 1_000_000}
    return parse_config({"router": {"routes": routes}, "redis": {"prefix": prefix},
                         "rate_limiter": {"default": limits}}, {})


@pytest.fixture(params=["memory", "redis"])
async def fleet(request: pytest.FixtureRequest, origin: Origin, key_prefix: str) -> AsyncIterator[list[Replica]]:
    """Two replicas, A and B, on one shared store."""
    async with replicas_on(request.param, _config(origin, key_prefix), request, key_prefix,
                           host="shop.example") as replicas:
        yield replicas


async def _cached(replica: Replica, uri: str, host: str = "shop.example", **headers: str) -> httpx.Response:
    """GET ``uri`` until it is a HIT (the first fills it)."""
    first = await replica.get(uri, host, **headers)
    assert first.status_code == 200
    again = await replica.get(uri, host, **headers)
    assert again.headers["x-cache"] == "HIT", uri
    return again


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "M-SEARCH"])
async def test_an_unsafe_request_on_one_replica_invalidates_for_the_other(fleet: list[Replica], method: str) -> None:
    a, b = fleet
    before = (await _cached(a, "/x")).json()["n"]
    assert (await b.get("/x")).headers["x-cache"] == "HIT"
    answer = await b.send(method, "/x")
    assert answer.status_code == 200
    after = await a.get("/x")
    assert after.headers["x-cache"] == "MISS"
    assert after.json()["n"] == before + 1
    assert (await b.get("/x")).headers["x-cache"] == "HIT"


async def test_every_variant_of_the_uri_goes_and_only_that_uri(fleet: list[Replica], origin: Origin) -> None:
    a, b = fleet
    for language in ("en", "fr"):
        await _cached(a, "/x", **{"Accept-Language": language})
    await _cached(a, "/x?page=2")
    await _cached(a, "/x/y")
    assert (await b.send("POST", "/x")).status_code == 200
    for language in ("en", "fr"):
        assert (await a.get("/x", **{"Accept-Language": language})).headers["x-cache"] == "MISS"
    assert (await a.get("/x?page=2")).headers["x-cache"] == "HIT"  # another URI
    assert (await a.get("/x/y")).headers["x-cache"] == "HIT"


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE"])
async def test_a_safe_method_invalidates_nothing(fleet: list[Replica], method: str) -> None:
    a, b = fleet
    await _cached(a, "/x")
    assert (await b.send(method, "/x", **{"X-Location": "/x"})).status_code == 200
    assert (await a.get("/x")).headers["x-cache"] == "HIT"


async def test_a_failed_or_refused_unsafe_request_invalidates_nothing(fleet: list[Replica]) -> None:
    a, b = fleet
    await _cached(a, "/x")
    await _cached(a, "/here")
    for status in ("500", "503", "404", "409"):
        answer = await b.send("POST", "/x", **{"X-Status": status, "X-Location": "/here"})
        assert answer.status_code == int(status)
    assert (await a.get("/x")).headers["x-cache"] == "HIT"
    assert (await a.get("/here")).headers["x-cache"] == "HIT"


async def test_location_and_content_location_on_the_same_host(fleet: list[Replica]) -> None:
    a, b = fleet
    for uri in ("/orders/7", "/orders/list?sort=new", "/items/3", "/orders/8"):
        await _cached(a, uri)
    answer = await b.send("POST", "/orders/new", **{
        "X-Status": "201", "X-Location": "7",  # relative to /orders/new
        "X-Content-Location": "http://SHOP.example:8080/orders/list?sort=new"})
    assert answer.status_code == 201
    assert (await a.get("/orders/7")).headers["x-cache"] == "MISS"
    assert (await a.get("/orders/list?sort=new")).headers["x-cache"] == "MISS"
    assert (await a.get("/items/3")).headers["x-cache"] == "HIT"
    # A 3xx is a success too; a normalised path names the same entry.
    await b.send("DELETE", "/items/3", **{"X-Status": "303", "X-Location": "/orders/./x/../8"})
    assert (await a.get("/orders/8")).headers["x-cache"] == "MISS"
    assert (await a.get("/items/3")).headers["x-cache"] == "MISS"


@pytest.mark.parametrize("location", [
    "http://other.example/victim",
    "https://other.example/victim",
    "//other.example/victim",
    "http://shop.example.other.example/victim",
    "http://shop.example@other.example/victim",
    "http://other.example\\@shop.example/victim",
    "http://[::1]/victim",
    "ftp://shop.example/victim",
    "http://shop.example:99999/victim",
    "http://shop.example:80:80/victim",
    "/%2e%2e/victim",
    "http://shop.example%2Eother.example/victim",
])
async def test_a_location_on_another_host_invalidates_nothing(fleet: list[Replica], location: str) -> None:
    """A hostile backend (or a client that makes it echo a field) cannot purge another origin's
    entries, nor anything through a value that is no URI reference on this host."""
    a, b = fleet
    await _cached(a, "/victim")
    await _cached(a, "/victim", host="other.example")
    for field in ("X-Location", "X-Content-Location"):
        assert (await b.send("POST", "/x", **{field: location})).status_code == 200
    assert (await a.get("/victim")).headers["x-cache"] == "HIT"
    assert (await a.get("/victim", host="other.example")).headers["x-cache"] == "HIT"


async def test_a_host_routes_entries_stay_when_another_host_names_the_path(fleet: list[Replica]) -> None:
    """The tenant route answers tenant.example alone: a POST on shop.example whose Location names
    the same path purges shop.example's URI, not the tenant's."""
    a, b = fleet
    await _cached(a, "/t/page", host="tenant.example")
    await _cached(a, "/t/page", host="shop.example")  # the catch-all route's entry
    await b.send("POST", "/t/form", host="shop.example", **{"X-Location": "/t/page"})
    assert (await a.get("/t/page", host="shop.example")).headers["x-cache"] == "MISS"
    assert (await a.get("/t/page", host="tenant.example")).headers["x-cache"] == "HIT"
    await b.send("PUT", "/t/page", host="tenant.example")
    assert (await a.get("/t/page", host="tenant.example")).headers["x-cache"] == "MISS"


async def _round_trips(replica: Replica, method: str, uri: str, **headers: str) -> int:
    before = replica.store.round_trips
    await replica.send(method, uri, **headers)
    await replica.orchestrator.cache_stage.filler.settled()  # a stored miss's store follows the answer
    return replica.store.round_trips - before


async def test_the_purge_is_the_completion_round_trip(fleet: list[Replica]) -> None:
    """An unsafe request's admission round trip (its rate limit) also asks whether its URI has
    entries. A success that has something to purge costs what a stored miss does: one completion
    round trip more, carrying the purge of all its URIs (with the circuit's outcome when the
    breaker has one to write). One that touches nothing cached, or fails, costs no more."""
    a, b = fleet
    await _cached(a, "/x")
    await _cached(a, "/y")
    await b.send("POST", "/x", **{"X-Status": "404"})  # the route's first request: warm
    assert await _round_trips(b, "POST", "/x", **{"X-Status": "404"}) == 1
    assert await _round_trips(b, "POST", "/never-cached") == 1
    assert await _round_trips(b, "POST", "/never-cached", **{"X-Location": "http://other.example/y"}) == 1
    assert (await a.get("/y")).headers["x-cache"] == "HIT"
    assert await _round_trips(b, "POST", "/x", **{"X-Location": "/y", "X-Content-Location": "/z"}) == 2
    assert await _round_trips(a, "GET", "/x") == 2  # a stored miss
    assert await _round_trips(a, "GET", "/y") == 2
    assert await _round_trips(a, "GET", "/y") == 1  # a hit
    # A URI without entries, whose answer names one with entries: that one is purged.
    assert await _round_trips(b, "PUT", "/never-cached", **{"X-Location": "/y"}) == 2
    assert (await a.get("/y")).headers["x-cache"] == "MISS"


async def test_concurrent_purges_and_fills_leave_the_indexes_whole(fleet: list[Replica]) -> None:
    a, b = fleet
    for round_ in range(3):
        await asyncio.gather(*(a.get(f"/c/{i}") for i in range(10)),
                             *(b.send("DELETE", f"/c/{i}") for i in range(0, 10, 2)))
    await asyncio.gather(*(b.send("DELETE", f"/c/{i}") for i in range(10)))
    for i in range(10):
        assert (await a.get(f"/c/{i}")).headers["x-cache"] == "MISS"
    await a.orchestrator.cache_stage.filler.settled()  # the stores follow the answers
    stats = await a.orchestrator.cache_manager.get_stats()
    assert stats["size"] == 10
