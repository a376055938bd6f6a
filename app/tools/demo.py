"""Demo backends: small real HTTP services to put behind the gateway (the demo, the tests, the fleet).

Every path answers JSON describing the request; a few paths behave badly on purpose:
``/slow?seconds=S``, ``/status/CODE``, ``/bytes/N`` (N bytes, streamed), ``/flaky?fail=K`` (the first
K calls answer 503), ``/echo-json`` (answers the request's body). ``GET /__hits`` tells how many
requests each path received, ``GET /__last`` what the last request looked like.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp import web


HITS = web.AppKey("hits", Counter)
LAST = web.AppKey("last", dict)


def demo_backend(name: str) -> web.Application:
    app = web.Application(client_max_size=1024 ** 3)
    hits: Counter[str] = Counter()
    app[HITS] = hits
    last: dict[str, object] = {}
    app[LAST] = last

    async def describe(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({
            "service": name, "method": request.method, "path": request.path,
            "query": dict(request.query), "headers": dict(request.headers), "body_size": len(body),
            "body": body.decode("utf-8", "replace") if len(body) < 4096 else None,
        })

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("seconds", "2")))
        return web.json_response({"service": name, "slow": True})

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.json_response({"service": name, "status": code}, status=code)

    async def stream_bytes(request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["n"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        block = b"x" * 65536
        while size > 0:
            await response.write(block[:size])
            size -= len(block)
        await response.write_eof()
        return response

    async def stream_chunks(request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["n"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        block = (b"%08d" % hits[request.path]) * 8192  # which call answered shows in the bytes
        while size > 0:
            await response.write(block[:size])
            size -= len(block)
        await response.write_eof()
        return response

    async def flaky(request: web.Request) -> web.Response:
        fail = int(request.query.get("fail", "1"))
        if hits[request.path] <= fail:
            return web.json_response({"service": name, "error": "flaky"}, status=503)
        return web.json_response({"service": name, "ok": True})

    async def set_headers(request: web.Request) -> web.Response:
        # The call's number on this path tells a fresh answer from a cached one.
        response = web.json_response({
            "service": name, "path": request.path, "n": hits[request.path],
            "headers": dict(request.headers), "query": dict(request.query)})
        for header, value in request.query.items():
            response.headers.add(header, value)
        return response

    async def hit_counts(_: web.Request) -> web.Response:
        return web.json_response(dict(hits))

    async def last_request(_: web.Request) -> web.Response:
        return web.json_response(last)

    async def echo_json(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/json")

    @web.middleware
    async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if not request.path.startswith("/__"):
            hits[request.path] += 1
            body = await request.read()
            last.clear()
            last.update({"method": request.method, "path": request.path, "query_string": request.query_string,
                         "headers": {k.lower(): v for k, v in request.headers.items()},
                         "body": body.decode("utf-8", "replace")})
        return await handler(request)

    app.middlewares.append(count)
    app.router.add_get("/__hits", hit_counts)
    app.router.add_get("/__last", last_request)
    app.router.add_route("*", "/echo-json", echo_json)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/status/{code:\\d+}", status)
    app.router.add_route("*", "/bytes/{n:\\d+}", stream_bytes)
    app.router.add_route("*", "/flaky", flaky)
    app.router.add_route("*", "/chunks/{n:\\d+}", stream_chunks)
    app.router.add_route("*", "/headers", set_headers)
    app.router.add_route("*", "/headers/{tail:.*}", set_headers)
    app.router.add_route("*", "/{tail:.*}", describe)
    return app


async def start_backend(name: str, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve a demo backend; returns the runner (to clean up) and the port it listens on."""
    runner = web.AppRunner(demo_backend(name), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    return runner, server.sockets[0].getsockname()[1]


def demo_routes(backend_a: str, backend_b: str) -> list[dict[str, Any]]:
    """The routes of the fleet demo (``python -m app fleet``) and the compose demo
    (deploy/gateway.yaml), each showing one shared behaviour of the fleet:

    - ``/api/*``: plain proxying, weighted across both backends (caching off to see every hop);
    - ``/limited/*``: 5 requests a minute per client, counted once for the whole fleet;
    - ``/cached/*``: answers kept 30 s in the shared cache, so any replica serves another's entry;
    - ``/fragile/*``: a backend that fails on request (``/fragile/status/500``); after 3 failures
      the circuit opens on every replica and stays open 15 s.
    """
    return [
        {"id": "api", "path": "/api/*", "strip_prefix": True, "cache": {"enabled": False},
         "targets": [{"url": backend_a, "weight": 1}, {"url": backend_b, "weight": 1}]},
        {"id": "limited", "path": "/limited/*", "target": backend_a, "strip_prefix": True,
         "cache": {"enabled": False}, "rate_limit": {"requests_per_minute": 5}},
        {"id": "cached", "path": "/cached/*", "target": backend_b, "strip_prefix": True,
         "cache": {"enabled": True, "ttl": 30}},
        {"id": "fragile", "path": "/fragile/*", "target": backend_b, "strip_prefix": True,
         "cache": {"enabled": False}, "timeout": {"read": 2.0},
         "circuit_breaker": {"failure_threshold": 3, "recovery_timeout": 15, "success_threshold": 1}},
    ]
