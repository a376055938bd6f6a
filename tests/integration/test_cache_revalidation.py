"""Revalidation (RFC 9111 section 4.3) across two replicas sharing one store (the memory store, and
a real Redis with a connection per replica), in front of a real origin that honours validators:
a stale entry with an ETag or Last-Modified is asked about with a conditional request, a 304
freshens it, one replica of the fleet asks while the others wait; a client's own conditional
request is answered 304 from a fresh entry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web

from app.config import parse_config
from tests.replicas import Replica, replicas_on
from tests.support import AiohttpOrigin

LAST_MODIFIED = "Tue, 01 Dec 2026 10:00:00 GMT"


@dataclass
class Seen:
    path: str
    if_none_match: str | None
    if_modified_since: str | None


class Origin(AiohttpOrigin):
    """/etag/... answers with an ETag, /lm/... with a Last-Modified only, /mr/... with an ETag and
    must-revalidate, /json/... with an ETag and a JSON body; each answer is fresh for one second. A request whose validator matches the
    resource's gets a 304 fresh for a minute, with X-Revalidated. ``change(path)`` makes a new
    version of a resource (another ETag and body)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []
        self.versions: dict[str, int] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/{tail:.*}", self._answer)

    def change(self, path: str) -> None:
        self.versions[path] = self.versions.get(path, 1) + 1

    def conditionals(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path and (s.if_none_match or s.if_modified_since)]

    async def _answer(self, request: web.Request) -> web.Response:
        path = request.path
        inm, ims = request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since")
        self.seen.append(Seen(path, inm, ims))
        version = self.versions.get(path, 1)
        etag = f'"v{version}"'
        validators = {"Last-Modified": LAST_MODIFIED} if path.startswith("/lm/") else {"ETag": etag}
        control = "max-age=1, must-revalidate" if path.startswith("/mr/") else "max-age=1"
        matched = (inm == etag) if "ETag" in validators else (inm is None and ims == LAST_MODIFIED)
        if matched:
            return web.Response(status=304, headers={**validators, "Cache-Control": "max-age=60",
                                                     "X-Revalidated": "yes"})
        if path.startswith("/json/"):
            return web.json_response({"name": f"{path} version {version}"},
                                     headers={**validators, "Cache-Control": control, "X-Version": str(version)})
        return web.Response(body=f"{path} version {version}".encode(), content_type="text/plain",
                            headers={**validators, "Cache-Control": control, "X-Version": str(version)})


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin().start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def fleet(request: pytest.FixtureRequest, origin: Origin, key_prefix: str) -> AsyncIterator[list[Replica]]:
    raw: dict[str, Any] = {"router": {"routes": [{"path": "/*", "target": origin.url}]},
                           "redis": {"prefix": key_prefix}, "rate_limiter": {"enabled": False},
                           "cache": {"stale_grace": 0}}
    async with replicas_on(request.param, parse_config(raw, {}), request, key_prefix) as replicas:
        yield replicas


@pytest.fixture(params=["memory", "redis"])
async def transforming_fleet(request: pytest.FixtureRequest, origin: Origin,
                             key_prefix: str) -> AsyncIterator[list[Replica]]:
    """A route that rewrites the answers' bodies and headers (a transform) in front of the origin."""
    transform = {"response_rules": [{"op": "uppercase", "field": "name"}],
                 "response_headers": {"add": {"X-Transformed": "yes"}}}
    raw: dict[str, Any] = {"router": {"routes": [{"path": "/json/*", "target": origin.url, "strip_prefix": False,
                                                  "transform": transform}]},
                           "redis": {"prefix": key_prefix}, "rate_limiter": {"enabled": False},
                           "cache": {"stale_grace": 0}}
    async with replicas_on(request.param, parse_config(raw, {}), request, key_prefix) as replicas:
        yield replicas


async def _stale(replica: Replica, uri: str) -> httpx.Response:
    """Fill ``uri`` and let its one second of freshness pass (what makes it stale is time)."""
    first = await replica.get(uri)
    assert first.headers["x-cache"] == "MISS"
    await asyncio.sleep(1.1)
    return first


@pytest.mark.parametrize("uri", ["/etag/a", "/lm/a", "/mr/a"])
async def test_a_304_freshens_the_stale_entry(fleet: list[Replica], origin: Origin, uri: str) -> None:
    a, b = fleet
    first = await _stale(a, uri)
    answer = await b.get(uri)
    assert answer.status_code == 200
    assert answer.headers["x-cache"] == "REVALIDATED"
    assert answer.content == first.content
    [asked] = origin.conditionals(uri)
    if uri.startswith("/lm/"):
        assert (asked.if_none_match, asked.if_modified_since) == (None, LAST_MODIFIED)
    else:
        assert (asked.if_none_match, asked.if_modified_since) == ('"v1"', None)
    # The stored answer took the 304's fields (RFC 9111 4.3.4) and its new lifetime.
    assert answer.headers["x-revalidated"] == "yes"
    assert answer.headers["cache-control"] == "max-age=60"
    assert answer.headers["x-version"] == "1"
    assert answer.headers["content-length"] == str(len(first.content))
    again = await a.get(uri)
    assert again.headers["x-cache"] == "HIT"
    assert again.content == first.content and again.headers["x-revalidated"] == "yes"
    assert len(origin.seen) == 2


async def test_a_route_with_a_transform_revalidates_its_transformed_entry(
        transforming_fleet: list[Replica], origin: Origin) -> None:
    """The entry holds the answer as transformed; the backend's 304 confirms it (no body to
    transform), and the client gets the stored, transformed body."""
    a, b = transforming_fleet
    first = await _stale(a, "/json/a")
    assert first.json() == {"name": "/JSON/A VERSION 1"} and first.headers["x-transformed"] == "yes"
    answer = await b.get("/json/a")
    assert answer.status_code == 200
    assert answer.headers["x-cache"] == "REVALIDATED"
    assert answer.content == first.content and answer.headers["x-transformed"] == "yes"
    assert answer.headers["content-length"] == str(len(first.content))
    assert [asked.if_none_match for asked in origin.conditionals("/json/a")] == ['"v1"']
    again = await a.get("/json/a")
    assert again.headers["x-cache"] == "HIT" and again.content == first.content
    assert len(origin.seen) == 2


async def test_a_route_with_a_transform_relays_the_backends_304_without_a_body_length(
        transforming_fleet: list[Replica], origin: Origin) -> None:
    """A client's own conditions go to the backend as sent; its 304 has no body to transform, so it
    reaches the client with no Content-Length of an empty body (a 304's, if any, is the 200's)."""
    a, _ = transforming_fleet
    first = await _stale(a, "/json/c")
    answer = await a.send("GET", "/json/c", None, **{"If-None-Match": first.headers["etag"]})
    assert answer.status_code == 304 and answer.content == b""
    assert answer.headers.get("content-length") in (None, str(len(first.content))), answer.headers
    assert answer.headers["x-transformed"] == "yes"
    assert [asked.if_none_match for asked in origin.conditionals("/json/c")] == ['"v1"']


async def test_a_changed_resource_replaces_the_entry(fleet: list[Replica], origin: Origin) -> None:
    a, b = fleet
    await _stale(a, "/etag/b")
    origin.change("/etag/b")
    answer = await b.get("/etag/b")
    assert answer.headers["x-cache"] == "MISS"
    assert answer.content == b"/etag/b version 2" and answer.headers["etag"] == '"v2"'
    assert origin.conditionals("/etag/b")[0].if_none_match == '"v1"'
    assert (await a.get("/etag/b")).content == b"/etag/b version 2"


async def test_one_replica_revalidates_while_the_others_wait(fleet: list[Replica], origin: Origin) -> None:
    a, b = fleet
    first = await _stale(a, "/etag/c")
    answers = await asyncio.gather(*(replica.get("/etag/c") for replica in (a, b, a, b, a, b)))
    assert [answer.status_code for answer in answers] == [200] * 6
    assert all(answer.content == first.content for answer in answers)
    assert len(origin.conditionals("/etag/c")) == 1
    assert len(origin.seen) == 2
    assert sorted(answer.headers["x-cache"] for answer in answers) == ["HIT"] * 5 + ["REVALIDATED"]


async def test_a_clients_own_conditional_goes_to_the_backend_as_sent(fleet: list[Replica], origin: Origin) -> None:
    a, _ = fleet
    await _stale(a, "/etag/d")
    answer = await a.get("/etag/d", **{"If-None-Match": '"v0"'})
    assert answer.status_code == 200 and answer.headers["x-cache"] == "MISS"
    assert [seen.if_none_match for seen in origin.conditionals("/etag/d")] == ['"v0"']
    answer = await a.get("/etag/d", **{"If-None-Match": '"v1"'})  # the origin's 304, passed on
    assert answer.status_code == 304


@pytest.mark.parametrize(("headers", "status"), [
    ({"If-None-Match": '"v1"'}, 304),
    ({"If-None-Match": 'W/"v1"'}, 304),  # a weak comparison
    ({"If-None-Match": '"x", "v1"'}, 304),
    ({"If-None-Match": "*"}, 304),
    ({"If-None-Match": '"v2"'}, 200),
    ({"If-None-Match": '"v2"', "If-Modified-Since": "Wed, 01 Dec 2100 10:00:00 GMT"}, 200),  # INM decides
    ({"If-None-Match": "v1"}, 200),  # no entity tag
    ({"If-Modified-Since": "Tue, 01 Dec 2026 10:00:00 GMT"}, 304),
    ({"If-Modified-Since": "Tue, 01 Dec 2026 09:59:59 GMT"}, 200),
    ({"If-Modified-Since": "Tue, 01 Dec 2026 10:00:00 GMT, x"}, 200),  # not a date: ignored
    ({"If-Modified-Since": "Wed, 01 Dec 2100 10:00:00 GMT"}, 200),  # in the future: ignored
])
async def test_a_clients_conditional_is_answered_from_a_fresh_entry(
        fleet: list[Replica], origin: Origin, headers: dict[str, str], status: int) -> None:
    a, b = fleet
    uri = "/lm/e" if "If-Modified-Since" in headers and "If-None-Match" not in headers else "/etag/e"
    first = await a.get(uri)
    answer = await b.get(uri, **headers)
    assert answer.status_code == status
    assert answer.headers["x-cache"] == "HIT"
    if status == 304:
        assert answer.content == b""
        assert answer.headers["cache-control"] == "max-age=1"
        assert "content-type" not in answer.headers and "x-version" not in answer.headers
    else:
        assert answer.content == first.content
    assert len(origin.seen) == 1


def test_origin_dates_are_in_the_past() -> None:
    """The fixed Last-Modified of the origin must be in the past for If-Modified-Since to count."""
    from email.utils import parsedate_to_datetime
    assert parsedate_to_datetime(LAST_MODIFIED).timestamp() < time.time()
