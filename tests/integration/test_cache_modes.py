"""The cache's two modes (``cache.mode``) across two replicas sharing one store (the memory store,
and a real Redis with a connection per replica), in front of a real origin: ``seed`` keeps an
answer without freshness information for the ttl; ``rfc9111`` keeps only what RFC 9111 lets a shared
cache keep, with heuristic freshness from Last-Modified for the statuses section 4.2.2 names, and
its routes' statuses default to every status it may store. In both, a ``no-cache`` answer with a
validator is kept and revalidated before every use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from typing import Any

import pytest
from aiohttp import web

from app.config import parse_config
from tests.replicas import Replica, replicas_on
from tests.support import AiohttpOrigin

DAY = 86_400


class Origin(AiohttpOrigin):
    """GET /<any path>?status=&cc=&lm=&etag= answers that status (200), that Cache-Control, a
    Last-Modified ``lm`` seconds before its first answer for the URI, and that ETag; a request
    whose If-None-Match (else If-Modified-Since) matches gets a 304 with the same fields. Each body
    names the URI and the answer's number, so a stored answer is told from a new one. A
    conditional request to a URI with ``delay`` is answered that many seconds late. While
    ``failing``, every request gets a 503."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, bool]] = []  # (URI, whether the request was conditional)
        self.conditions: list[tuple[str | None, str | None]] = []  # (If-None-Match, If-Modified-Since) as received
        self.modified: dict[str, str] = {}
        self.failing = False
        self.in_flight = self.most_in_flight = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/{tail:.*}", self._answer)

    def asked(self, uri: str) -> list[bool]:
        """Whether each request the origin got for ``uri`` was conditional."""
        return [conditional for seen_uri, conditional in self.seen if seen_uri == uri]

    async def _answer(self, request: web.Request) -> web.Response:
        query, uri = request.query, request.path_qs
        inm, ims = request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since")
        self.seen.append((uri, inm is not None or ims is not None))
        self.conditions.append((inm, ims))
        if "delay" in query and (inm is not None or ims is not None):
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            await asyncio.sleep(float(query["delay"]))
            self.in_flight -= 1
        if self.failing:
            return web.Response(status=503)
        headers = {}
        if "lm" in query:
            headers["Last-Modified"] = self.modified.setdefault(
                uri, formatdate(time.time() - int(query["lm"]), usegmt=True))
        if "etag" in query:
            headers["ETag"] = f'"{query["etag"]}"'
        if "cc" in query:
            headers["Cache-Control"] = query["cc"]
        if (inm is not None and inm == headers.get("ETag")) or \
                (inm is None and ims is not None and ims == headers.get("Last-Modified")):
            return web.Response(status=304, headers=headers)
        return web.Response(status=int(query.get("status", "200")), headers=headers,
                            body=f"{uri} #{len(self.seen)}".encode())


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin().start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def fleet(store: str, request: pytest.FixtureRequest, key_prefix: str, origin: Origin,
                cache: dict[str, Any] | None = None, **route_cache: Any) -> AsyncIterator[list[Replica]]:
    """Two replicas with one catch-all route (its ``cache:`` is ``route_cache``)."""
    route: dict[str, Any] = {"path": "/*", "target": origin.url}
    if route_cache:
        route["cache"] = route_cache
    raw = {"router": {"routes": [route]}, "redis": {"prefix": key_prefix}, "rate_limiter": {"enabled": False},
           "circuit_breaker": {"enabled": False}, "cache": cache or {}}
    async with replicas_on(store, parse_config(raw, {}), request, key_prefix) as replicas:
        yield replicas


async def _twice(replicas: list[Replica], uri: str) -> tuple[Any, Any]:
    """``uri`` through one replica, then through the other."""
    a, b = replicas
    return await a.get(uri), await b.get(uri)


def _kept(first: Any, second: Any) -> bool:
    """Whether the second answer was the first one, from the cache."""
    assert first.headers["x-cache"] == "MISS"
    if second.headers["x-cache"] == "HIT":
        assert second.content == first.content and second.status_code == first.status_code
        return True
    assert second.headers["x-cache"] == "MISS" and second.content != first.content
    return False


@pytest.mark.parametrize(("mode", "kept"), [("seed", True), ("rfc9111", False)])
async def test_an_answer_without_freshness_information_is_kept_in_seed_mode_only(
        store: str, request: pytest.FixtureRequest, key_prefix: str, origin: Origin, mode: str, kept: bool) -> None:
    async with fleet(store, request, key_prefix, origin, {"mode": mode}) as replicas:
        assert _kept(*await _twice(replicas, "/plain")) is kept
        assert len(origin.seen) == (1 if kept else 2)


async def test_the_mode_is_also_a_routes_own(store: str, request: pytest.FixtureRequest, key_prefix: str,
                                             origin: Origin) -> None:
    raw = {"router": {"routes": [{"path": "/strict/*", "target": origin.url, "cache": {"mode": "rfc9111"}},
                                 {"path": "/*", "target": origin.url}]},
           "redis": {"prefix": key_prefix}, "rate_limiter": {"enabled": False}}
    async with replicas_on(store, parse_config(raw, {}), request, key_prefix) as replicas:
        assert _kept(*await _twice(replicas, "/loose/a")) is True
        assert _kept(*await _twice(replicas, "/strict/a")) is False


async def test_heuristic_freshness_from_last_modified_capped_by_the_ttl(
        store: str, request: pytest.FixtureRequest, key_prefix: str, origin: Origin) -> None:
    """Modified 10 days ago: a day of heuristic freshness (a tenth), cut to the ttl's second; then
    the entry is stale, and revalidated with its Last-Modified."""
    async with fleet(store, request, key_prefix, origin, {"mode": "rfc9111", "ttl": 1, "stale_grace": 0}) as replicas:
        first, second = await _twice(replicas, f"/h?lm={10 * DAY}")
        assert _kept(first, second)
        await asyncio.sleep(1.1)
        third = await replicas[0].get(f"/h?lm={10 * DAY}")
        assert third.headers["x-cache"] == "REVALIDATED" and third.content == first.content
        assert origin.asked(f"/h?lm={10 * DAY}") == [False, True]


async def test_a_recent_last_modified_gives_no_heuristic_freshness(
        store: str, request: pytest.FixtureRequest, key_prefix: str, origin: Origin) -> None:
    """Modified 5 s ago: half a second is no whole second of freshness. The entry is kept stale,
    to be revalidated: the next request asks with If-Modified-Since and gets the stored body."""
    async with fleet(store, request, key_prefix, origin, {"mode": "rfc9111"}) as replicas:
        first, second = await _twice(replicas, "/recent?lm=5")
        assert second.headers["x-cache"] == "REVALIDATED" and second.content == first.content
        assert origin.asked("/recent?lm=5") == [False, True]


@pytest.mark.parametrize(("status", "control", "kept"), [
    # Heuristically cacheable (RFC 9110 section 15.1): kept on Last-Modified alone.
    (200, None, True), (203, None, True), (404, None, True), (405, None, True), (410, None, True),
    (414, None, True), (501, None, True), (301, None, True), (308, None, True),
    # Not heuristically cacheable: not kept without explicit freshness.
    (201, None, False), (302, None, False), (403, None, False), (500, None, False), (503, None, False),
    (599, None, False),
    # public allows a heuristic for any status.
    (599, "public", True),
    # With explicit freshness every final status is storable by default, known or not.
    (302, "max-age=60", True), (403, "max-age=60", True), (500, "max-age=60", True), (599, "max-age=60", True),
    (299, "max-age=60", True),
    # must-understand: kept for a status the cache understands, even with no-store; never for another.
    (200, "max-age=60, must-understand, no-store", True), (599, "max-age=60, must-understand", False),
    (200, "max-age=60, no-store", False),
])
async def test_what_rfc9111_mode_keeps_by_status(store: str, request: pytest.FixtureRequest, key_prefix: str,
                                                 origin: Origin, status: int, control: str | None,
                                                 kept: bool) -> None:
    uri = f"/s?status={status}&lm={10 * DAY}" + (f"&cc={control}" if control else "")
    async with fleet(store, request, key_prefix, origin, {"mode": "rfc9111"}) as replicas:
        first, second = await _twice(replicas, uri)
        assert first.status_code == status
        assert _kept(first, second) is kept


@pytest.mark.parametrize(("mode", "statuses", "kept"), [
    ("seed", None, False),        # seed mode's default: 200 only
    ("seed", [200, 404], True),
    ("rfc9111", None, True),
    ("rfc9111", [200], False),    # a route's own list still decides
])
async def test_a_routes_statuses_default_to_its_modes(store: str, request: pytest.FixtureRequest, key_prefix: str,
                                                      origin: Origin, mode: str, statuses: list[int] | None,
                                                      kept: bool) -> None:
    route_cache = {"statuses": statuses} if statuses is not None else {}
    async with fleet(store, request, key_prefix, origin, {"mode": mode}, **route_cache) as replicas:
        assert _kept(*await _twice(replicas, "/missing?status=404&cc=max-age=60")) is kept


@pytest.mark.parametrize("mode", ["seed", "rfc9111"])
@pytest.mark.parametrize("validator", ["etag=v1", f"lm={DAY}"])
async def test_a_no_cache_answer_is_revalidated_before_every_use(
        store: str, request: pytest.FixtureRequest, key_prefix: str, origin: Origin, mode: str,
        validator: str) -> None:
    uri = f"/nc?cc=no-cache&{validator}"
    async with fleet(store, request, key_prefix, origin, {"mode": mode}) as replicas:
        a, b = replicas
        first = await a.get(uri)
        assert first.headers["x-cache"] == "MISS"
        for replica in (b, a, b):
            answer = await replica.get(uri)
            assert answer.status_code == 200
            assert answer.headers["x-cache"] == "REVALIDATED" and answer.content == first.content
        assert origin.asked(uri) == [False, True, True, True]


@pytest.mark.parametrize("mode", ["seed", "rfc9111"])
async def test_a_no_cache_answer_without_a_validator_is_not_kept(
        store: str, request: pytest.FixtureRequest, key_prefix: str, origin: Origin, mode: str) -> None:
    async with fleet(store, request, key_prefix, origin, {"mode": mode}) as replicas:
        assert _kept(*await _twice(replicas, "/nc?cc=no-cache")) is False
        assert origin.asked("/nc?cc=no-cache") == [False, False]


@pytest.mark.parametrize(("control", "stale"), [("no-cache", False), ("max-age=0", True)])
async def test_a_no_cache_entry_never_answers_a_failure(store: str, request: pytest.FixtureRequest,
                                                        key_prefix: str, origin: Origin, control: str,
                                                        stale: bool) -> None:
    """With stale_grace, a stale entry answers instead of a failing origin; a no-cache one never
    does (its use needs a successful revalidation)."""
    uri = f"/f?cc={control}&etag=v1"
    async with fleet(store, request, key_prefix, origin, {"mode": "rfc9111", "stale_grace": 60}) as replicas:
        a, b = replicas
        first = await a.get(uri)
        origin.failing = True
        answer = await b.get(uri)
        if stale:
            assert answer.status_code == 200 and answer.headers["x-cache"] == "STALE"
            assert answer.content == first.content
        else:
            assert answer.status_code == 503 and answer.content != first.content
        assert origin.asked(uri) == [False, True]


async def test_concurrent_uses_of_a_no_cache_entry_are_each_revalidated_at_once(
        store: str, request: pytest.FixtureRequest, key_prefix: str, origin: Origin) -> None:
    """Each use revalidates with the entry's validators (the origin sends no body again), and none
    waits for another's revalidation, which would not do for it: a hot no-cache resource is not
    served one request at a time."""
    uri = "/nc-many?cc=no-cache&etag=v1&delay=0.3"
    async with fleet(store, request, key_prefix, origin, {"mode": "rfc9111"}) as replicas:
        a, b = replicas
        first = await a.get(uri)
        answers = await asyncio.gather(*(replica.get(uri) for replica in (a, b, a, b, a, b)))
        assert [answer.status_code for answer in answers] == [200] * 6
        assert all(answer.content == first.content for answer in answers)
        assert all(answer.headers["x-cache"] == "REVALIDATED" for answer in answers)
        assert origin.asked(uri) == [False] + [True] * 6
        assert origin.most_in_flight > 1


async def test_a_hostile_clients_own_conditions_with_no_cache_reach_the_backend_as_sent(
        store: str, request: pytest.FixtureRequest, key_prefix: str, origin: Origin) -> None:
    """A client that sends no-cache with conditions of its own (forged, malformed, a wildcard; control
    characters never get this far: the edge refuses them, tests/attacks/test_head.py) gets
    no validator of the kept entry added or substituted: the backend sees exactly the client's
    fields, the client gets the backend's answer, and a 304 to the client's own conditions never
    becomes the entry (the next plain read is still the full stored body)."""
    uri = "/fresh?cc=max-age=600&etag=v1"
    async with fleet(store, request, key_prefix, origin) as replicas:
        a, b = replicas
        assert (await a.get(uri)).headers["x-cache"] == "MISS"
        await a.orchestrator.cache_stage.filler.settled()
        sent = [('"v1"', None), ('W/"v1", *, ,,', None), ('"forged"', None), (None, "not a date, 32 Foo 99"),
                ('"' + "x" * 4000 + '"', None)]
        for inm, ims in sent:
            fields = {"Cache-Control": "no-cache"}
            if inm is not None:
                fields["If-None-Match"] = inm
            if ims is not None:
                fields["If-Modified-Since"] = ims
            answer = await b.get(uri, **fields)
            assert answer.status_code == (304 if inm == '"v1"' else 200), (fields, answer.status_code)
            assert answer.headers["x-cache"] == "MISS", fields
        assert origin.conditions[1:] == sent
        again = await a.get(uri)
        assert again.status_code == 200 and again.headers["x-cache"] == "HIT" and again.content
        assert again.content.startswith(b"/fresh?") and again.content != b""


@pytest.mark.parametrize("mode", ["seed", "rfc9111"])
async def test_a_clients_no_cache_revalidates_the_kept_entry(store: str, request: pytest.FixtureRequest,
                                                            key_prefix: str, origin: Origin, mode: str) -> None:
    """A client's no-cache (or max-age=0, or Pragma: no-cache) asks the backend with the fresh
    entry's validators; a 304 answers it with the stored body. Should the backend fail, the client
    gets the failure, not the entry it asked to have confirmed."""
    uri = "/fresh?cc=max-age=600&etag=v1"
    async with fleet(store, request, key_prefix, origin, {"mode": mode}) as replicas:
        a, b = replicas
        first = await a.get(uri)
        await a.orchestrator.cache_stage.filler.settled()  # its store lands after the answer
        for fields in ({"Cache-Control": "no-cache"}, {"Cache-Control": "max-age=0"}, {"Pragma": "no-cache"}):
            answer = await b.get(uri, **fields)
            assert answer.status_code == 200, fields
            assert answer.headers["x-cache"] == "REVALIDATED" and answer.content == first.content, fields
        assert origin.asked(uri) == [False, True, True, True]
        origin.failing = True
        assert (await a.get(uri, **{"Cache-Control": "no-cache"})).status_code == 503
        assert (await b.get(uri)).headers["x-cache"] == "HIT"
