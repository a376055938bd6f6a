"""The floor the gateway is measured against: the least an ASGI proxy on aiohttp can do.

docs/design.md's "Data plane" figure (79 us of CPU per request) is this program: uvicorn with uvloop and
httptools, one process, a raw ASGI callable that forwards the method, path and headers through one
``aiohttp.ClientSession`` and answers with the backend's status, headers and body. No routing, no
header policy, no error handling: it shows what the gateway's own work costs on top, in the same run.

    python -m tests.perf.bare_proxy BACKEND_URL PORT
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import uvicorn
from yarl import URL

_SKIP = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length"})


class BareProxy:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(auto_decompress=False,
                                                         skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.session is not None:
                        await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.session is not None
        target = self.backend + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"] if n not in _SKIP]
        async with self.session.request(scope["method"], URL(target, encoded=True), headers=headers) as response:
            body = await response.read()
            out = [(n.lower(), v) for n, v in response.raw_headers if n.lower() not in _SKIP]
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        await send({"type": "http.response.body", "body": body})


def command(backend: str, port: int) -> list[str]:
    """How the benchmarks start it: this module, as its own process."""
    return [sys.executable, "-m", "tests.perf.bare_proxy", backend, str(port)]


def main() -> None:
    backend, port = sys.argv[1].rstrip("/"), int(sys.argv[2])
    uvicorn.run(BareProxy(backend), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                lifespan="on", access_log=False, log_level="warning", server_header=False, date_header=False)


if __name__ == "__main__":
    main()
