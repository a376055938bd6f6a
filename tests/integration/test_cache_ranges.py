"""Range requests through the cache, on the memory store and on a real Redis, two replicas in front
of a real origin that honours ranges and preconditions itself: a kept answer serves one range (206)
or refuses one past its end (416); a range or a precondition of the client's own never holds the
fleet's fill of a key nor marks the key as one that cannot be kept (a hostile client's Range on a
missing key used to make every replica go to the backend for the next 10 s); bytes=0- fills the
cache with the whole answer. Bytes are checked as the client receives them over a real socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from app.config import parse_config
from tests.replicas import Replica, replicas_on
from tests.support import AiohttpOrigin, GatewayThread

BODY = bytes(range(256)) * 4  # every byte value, 1,024 of them
LAST_MODIFIED = "Tue, 01 Dec 2026 10:00:00 GMT"
ETAG = '"v1"'


class Origin(AiohttpOrigin):
    """Every path answers BODY, fresh for a minute, with an ETag and a Last-Modified, after
    ``delay`` seconds; a single Range is answered 206 as a server that does ranges would, a
    failed If-Match or If-Unmodified-Since 412. ``seen`` holds each request's path and the fields the cache may drop."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, str | None]] = []
        self.delay = 0.0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/{tail:.*}", self._answer)

    def requests_for(self, path: str) -> list[dict[str, str | None]]:
        return [s for s in self.seen if s["path"] == path]

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        wanted = request.headers.get("Range")
        self.seen.append({"path": request.path_qs, "range": wanted, "if-range": request.headers.get("If-Range"),
                          "if-match": request.headers.get("If-Match"),
                          "if-none-match": request.headers.get("If-None-Match")})
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = {"Cache-Control": "max-age=60", "ETag": ETAG, "Last-Modified": LAST_MODIFIED,
                   "Content-Type": "application/octet-stream"}
        match, unmodified = request.headers.get("If-Match"), request.headers.get("If-Unmodified-Since")
        if match is not None and match != ETAG or unmodified is not None and unmodified != LAST_MODIFIED:
            return web.Response(status=412, headers={"Cache-Control": "max-age=60"})
        if wanted and wanted.startswith("bytes=") and "," not in wanted:
            first_raw, last_raw = wanted[6:].split("-")
            first, last = int(first_raw), int(last_raw) if last_raw else len(BODY) - 1
            return web.Response(status=206, body=BODY[first:last + 1],
                                headers={**headers, "Content-Range": f"bytes {first}-{last}/{len(BODY)}"})
        return web.Response(body=BODY, headers=headers)


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin().start()
    yield server
    server.stop()


def _config(origin: Origin, key_prefix: str = "apigw-test") -> dict[str, Any]:
    return {"router": {"routes": [{"path": "/*", "target": origin.url}]}, "redis": {"prefix": key_prefix},
            "rate_limiter": {"enabled": False}, "cache": {"stale_grace": 0, "lock_wait": 5}}


@pytest.fixture(params=["memory", "redis"])
async def fleet(request: pytest.FixtureRequest, origin: Origin, key_prefix: str) -> AsyncIterator[list[Replica]]:
    async with replicas_on(request.param, parse_config(_config(origin, key_prefix), {}), request,
                           key_prefix) as replicas:
        yield replicas


async def _kept(replica: Replica, uri: str) -> None:
    first = await replica.get(uri)
    assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
    again = await replica.get(uri)
    assert again.headers["x-cache"] == "HIT"


@pytest.mark.parametrize(("field", "first", "last"), [
    ("bytes=10-19", 10, 19), ("bytes=1000-", 1000, 1023), ("bytes=-5", 1019, 1023), ("bytes=-5000", 0, 1023),
    ("bytes=1020-9999", 1020, 1023), ("bytes=0-0", 0, 0),
])
async def test_a_kept_answer_serves_one_range(fleet: list[Replica], origin: Origin, field: str, first: int,
                                              last: int) -> None:
    a, b = fleet
    await _kept(a, "/r")
    answer = await b.get("/r", Range=field)
    assert answer.status_code == 206
    assert answer.content == BODY[first:last + 1]
    assert answer.headers["content-range"] == f"bytes {first}-{last}/1024"
    assert answer.headers["content-length"] == str(last - first + 1)
    assert answer.headers["x-cache"] == "HIT"
    assert answer.headers["etag"] == ETAG
    assert len(origin.requests_for("/r")) == 1  # the ranges came from the cache


@pytest.mark.parametrize("field", ["bytes=1024-", "bytes=5000-6000", "bytes=-0", "bytes=" + "9" * 5000 + "-"])
async def test_a_range_past_the_end_of_a_kept_answer_is_refused(fleet: list[Replica], field: str) -> None:
    a, b = fleet
    await _kept(a, "/r")
    answer = await b.get("/r", Range=field)
    assert answer.status_code == 416
    assert answer.headers["content-range"] == "bytes */1024"
    assert answer.json() == {"error": "range not satisfiable", "length": 1024}


@pytest.mark.parametrize("field", ["bytes=0-1,5-6", "items=0-1", "bytes=5-1", "bytes=abc", "bytes=-", "bytes=\t",
                                   "bytes=1-2-3"])
async def test_a_range_the_cache_does_not_serve_gets_the_whole_answer(fleet: list[Replica], field: str) -> None:
    a, b = fleet
    await _kept(a, "/r")
    answer = await b.get("/r", Range=field)
    assert (answer.status_code, answer.content, answer.headers["x-cache"]) == (200, BODY, "HIT")
    assert "content-range" not in answer.headers


@pytest.mark.parametrize(("condition", "sliced"), [
    (ETAG, True), ('"v2"', False), ('W/"v1"', False), ("Tue, 01 Dec 2026 09:59:59 GMT", False),
])
async def test_if_range(fleet: list[Replica], condition: str, sliced: bool) -> None:
    a, b = fleet
    await _kept(a, "/r")
    answer = await b.get("/r", Range="bytes=0-9", **{"If-Range": condition})
    assert (answer.status_code, answer.content) == ((206, BODY[:10]) if sliced else (200, BODY))


async def test_if_range_by_the_last_modified_date(fleet: list[Replica]) -> None:
    """The origin's answers carry a Date of now, days after their Last-Modified: a strong date."""
    a, b = fleet
    await _kept(a, "/r")
    answer = await b.get("/r", Range="bytes=0-9", **{"If-Range": LAST_MODIFIED})
    assert (answer.status_code, answer.content) == (206, BODY[:10])


async def test_head_ignores_range(fleet: list[Replica]) -> None:
    a, b = fleet
    await _kept(a, "/r")
    answer = await b.send("HEAD", "/r", Range="bytes=0-9")
    assert (answer.status_code, answer.content) == (200, b"")


async def _together(replicas: list[Replica], uri: str, count: int) -> list[Any]:
    return list(await asyncio.gather(*(replicas[i % len(replicas)].get(uri) for i in range(count))))


@pytest.mark.parametrize("hostile", [{"Range": "bytes=0-0"}, {"Range": "bytes=5-"}, {"If-Match": '"nope"'},
                                     {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}])
async def test_a_clients_range_or_precondition_on_a_missing_key_does_not_break_the_fill(
        fleet: list[Replica], origin: Origin, hostile: dict[str, str]) -> None:
    """The answer is the origin's own, relayed; nothing of it is kept; and the key's next plain
    requests, on both replicas at once, still make one backend request between them."""
    a, _ = fleet
    answer = await a.get("/k", **hostile)
    expected = 206 if "Range" in hostile else 412
    assert answer.status_code == expected
    if expected == 206:
        assert answer.content == BODY[int(hostile["Range"][6:].split("-")[0]):][:len(answer.content)]
    origin.delay = 0.3
    answers = await _together(fleet, "/k", 6)
    assert [r.status_code for r in answers] == [200] * 6
    assert all(r.content == BODY for r in answers)
    assert len(origin.requests_for("/k")) == 2  # the hostile one, and one fill for the six
    assert sorted(r.headers["x-cache"] for r in answers) == ["HIT"] * 5 + ["MISS"]


async def test_a_range_request_waits_for_no_fill_and_takes_none(fleet: list[Replica], origin: Origin) -> None:
    """While a fill is on its way, a range request goes to the backend at once (its 206 is not the
    fill's to wait for), and the fill lands for everyone."""
    a, b = fleet
    origin.delay = 0.5
    filling = asyncio.create_task(a.get("/w"))
    await asyncio.sleep(0.2)
    ranging = asyncio.create_task(b.get("/w", Range="bytes=0-9"))
    await asyncio.sleep(0.2)
    # Both at the backend at once: the range request did not wait for the fill.
    assert [seen["range"] for seen in origin.requests_for("/w")] == [None, "bytes=0-9"]
    assert not filling.done()
    ranged = await ranging
    assert (ranged.status_code, ranged.content) == (206, BODY[:10])
    assert (await filling).headers["x-cache"] == "MISS"
    origin.delay = 0
    assert (await b.get("/w")).headers["x-cache"] == "HIT"


async def test_bytes_0_fills_the_cache_with_the_whole_answer(fleet: list[Replica], origin: Origin) -> None:
    a, b = fleet
    answer = await a.get("/media", Range="bytes=0-", **{"If-Range": '"v0"'})
    [asked] = origin.requests_for("/media")
    assert (asked["range"], asked["if-range"]) == (None, None)  # the whole answer was asked for
    # If-Range named another version: the whole answer, as a 200.
    assert (answer.status_code, answer.content, answer.headers["x-cache"]) == (200, BODY, "MISS")
    again = await b.get("/media", Range="bytes=0-")
    assert (again.status_code, again.content, again.headers["x-cache"]) == (206, BODY, "HIT")
    assert again.headers["content-range"] == "bytes 0-1023/1024"
    other = await b.get("/media2", Range="bytes=0-")
    assert (other.status_code, other.headers["content-range"], other.headers["x-cache"]) == \
        (206, "bytes 0-1023/1024", "MISS")
    assert (await a.get("/media2")).headers["x-cache"] == "HIT"
    assert len(origin.requests_for("/media2")) == 1


async def test_a_background_refresh_asks_for_the_whole_answer(origin: Origin, request: pytest.FixtureRequest,
                                                              key_prefix: str) -> None:
    """Stale-while-revalidate: the refresh a client's conditional request starts carries none of
    that client's conditions (its If-None-Match would get a 304 that stores nothing)."""

    class Swr(Origin):
        async def _answer(self, request: web.Request) -> web.StreamResponse:
            answer = await super()._answer(request)
            answer.headers["Cache-Control"] = "max-age=1, stale-while-revalidate=60"
            return answer

    swr = Swr().start()
    try:
        async with replicas_on("memory", parse_config(_config(swr, key_prefix), {}), request,
                               key_prefix) as (a, _):
            await a.get("/s")
            await asyncio.sleep(1.1)
            stale = await a.get("/s", **{"If-None-Match": ETAG})
            assert (stale.status_code, stale.headers["x-cache"]) == (304, "STALE")
            for _ in range(50):
                if len(swr.requests_for("/s")) == 2:
                    break
                await asyncio.sleep(0.05)
            refresh = swr.requests_for("/s")[1]
            assert refresh["if-none-match"] is None
            await asyncio.sleep(0.1)
            assert (await a.get("/s")).headers["x-cache"] == "HIT"  # the refresh stored the answer
    finally:
        swr.stop()


def _raw_get(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_the_bytes_on_the_wire(origin: Origin) -> None:
    """Over a real socket: the 206's head frames exactly the range's bytes, and the 416's head
    its JSON."""
    with GatewayThread(parse_config({**_config(origin), "redis": {}}, {})) as gateway:
        _raw_get(gateway.port, b"GET /wire HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = _raw_get(gateway.port, b"GET /wire HTTP/1.1\r\nHost: x\r\nRange: bytes=250-259\r\n"
                                          b"Connection: close\r\n\r\n")
        head, body = received.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 206 Partial Content"
        fields = [line.split(b": ", 1)[0].lower() for line in lines[1:]]
        assert fields.count(b"content-length") == 1 and fields.count(b"content-range") == 1
        assert b"content-length: 10" in head.lower() and b"content-range: bytes 250-259/1024" in head.lower()
        assert body == BODY[250:260] == bytes(range(250, 256)) + bytes(range(4))
        refused = _raw_get(gateway.port, b"GET /wire HTTP/1.1\r\nHost: x\r\nRange: bytes=2000-\r\n"
                                         b"Connection: close\r\n\r\n")
        head, body = refused.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 416 ")
        assert body == b'{"error":"range not satisfiable","length":1024}'
