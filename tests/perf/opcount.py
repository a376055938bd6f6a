"""Python bytecodes executed per proxied request: a yardstick that other work on the machine cannot move.

CPU per request on a shared two-core machine moves by +-5% or more from run to run, more than most
single hot-path changes save. The bytecodes the interpreter runs for one request (the gateway's code
and the aiohttp client's, not uvicorn's, not C code or system calls) are exactly the same every time,
so a change's effect on them shows even when the timing cannot. It is a proxy for Python-level
work only: a change that moves work into C shows up here as a saving it may not fully be.

    python -m tests.perf.opcount [--source DIR] [--requests N] [--case gw_proxy]

``--source`` runs another checkout's ``app`` (tests.perf.ab exports an older commit there).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

_count = 0


def _tracer(frame: Any, event: str, arg: Any) -> Any:
    frame.f_trace_opcodes = True
    return _local


def _local(frame: Any, event: str, arg: Any) -> Any:
    global _count
    if event == "opcode":
        _count += 1
    return _local


async def _measure(app: Any, requests: int, unique: bool = False) -> float:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/bench", "raw_path": b"/bench", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080)}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    def request(i: int) -> dict[str, Any]:
        # For the cache-miss configuration every request its own URL, as in tests.perf.run.
        return {**scope, "query_string": f"n={i}".encode()} if unique else dict(scope)

    for i in range(20):  # warm: connection pool, caches, lazily built structures
        await app(request(-i - 1), receive, send)
    global _count
    _count = 0
    sys.settrace(_tracer)
    try:
        for i in range(requests):
            await app(request(i), receive, send)
    finally:
        sys.settrace(None)
    if set(statuses) != {200}:
        raise RuntimeError(f"the gateway answered {sorted(set(statuses))}, not only 200")
    return _count / requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.opcount", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="the checkout whose app/ to measure (default: this one)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--case", default="gw_proxy")
    args = parser.parse_args(argv)
    if args.source is not None:
        sys.path.insert(0, str(args.source.resolve()))
        for name in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
            del sys.modules[name]

    import uvloop

    from app.config import parse_config
    from app.edge.server import Gateway
    from tests.perf.configs import CASES
    from tests.perf.servers import backend_nginx
    from tests.support import free_port

    case = next(c for c in CASES if c.name == args.case)
    port = free_port()
    backend = backend_nginx(port).start(port)
    try:
        config = parse_config(case.config(f"http://127.0.0.1:{port}"), {}, "opcount")

        async def run() -> float:
            gateway = Gateway(config)  # the memory store: no Redis traffic in the count
            await gateway.orchestrator.start()
            try:
                return await _measure(gateway, args.requests, case.unique_paths)
            finally:
                await gateway.orchestrator.close()

        per_request = uvloop.run(run())
    finally:
        backend.stop()
    print(f"{per_request:.0f} bytecodes per request ({case.name}, {args.requests} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
