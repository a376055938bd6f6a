"""A peer for the benchmark: rate limiting the way a Python service usually bolts it on.

A FastAPI app whose HTTP middleware runs one Redis Lua script per request (a per-client fixed
window of one minute, keyed by ``X-Client-ID``) and answers 429 above the limit; a catch-all route
forwards everything else to the backend through one ``httpx.AsyncClient``. Served by uvicorn with
uvloop and httptools, one process, like the gateway's single worker. This is the integration the
seed's own stack (FastAPI, httpx, redis-py) leads to; the benchmark places the gateway against it.

    python -m tests.perf.seed_pattern BACKEND_URL PORT REDIS_URL LIMIT_PER_MINUTE PREFIX
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, Request, Response

# One round trip: count the request in its client's window, start the window's expiry on the first.
FIXED_WINDOW = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then return 0 end
return 1
"""

_HOP = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "content-length"})


def build(backend: str, redis_url: str, limit: int, prefix: str) -> FastAPI:
    state: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        client = aioredis.Redis.from_url(redis_url)
        state["script"] = client.register_script(FIXED_WINDOW)
        state["http"] = httpx.AsyncClient(base_url=backend, limits=httpx.Limits(max_keepalive_connections=64))
        yield
        await state["http"].aclose()  # type: ignore[attr-defined]
        await client.aclose()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def rate_limit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        client_id = request.headers.get("x-client-id") or (request.client.host if request.client else "-")
        window = int(time.time() // 60)
        allowed = await state["script"](keys=[f"{prefix}:{client_id}:{window}"], args=[limit, 60_000])  # type: ignore[operator]
        if not allowed:
            return Response('{"error":"rate limit exceeded"}', status_code=429, media_type="application/json")
        return await call_next(request)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    async def forward(request: Request, path: str) -> Response:
        http: httpx.AsyncClient = state["http"]  # type: ignore[assignment]
        headers = [(k, v) for k, v in request.headers.items() if k not in _HOP]
        answer = await http.request(request.method, "/" + path, params=request.query_params,
                                    headers=headers, content=await request.body())
        out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
        return Response(answer.content, status_code=answer.status_code, headers=out)

    return app


def main() -> None:
    backend, port, redis_url, limit, prefix = sys.argv[1:6]
    uvicorn.run(build(backend.rstrip("/"), redis_url, int(limit), prefix), host="127.0.0.1", port=int(port),
                loop="uvloop", http="httptools", access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
