"""Python bytecodes executed per proxied request: a yardstick that other work on the machine cannot move.

CPU per request on a shared two-core machine moves by +-5% or more from run to run, more than most
single hot-path changes save. The bytecodes the interpreter runs for one request (the gateway's code
and the aiohttp client's, not uvicorn's, not C code or system calls) are exactly the same every time,
so a change's effect on them shows even when the timing cannot. It is a proxy for Python-level
work only: a change that moves work into C shows up here as a saving it may not fully be.

    python -m tests.perf.opcount [--source DIR] [--requests N] [--case gw_proxy] [--store redis|cluster]

``--source`` runs another checkout's ``app`` (tests.perf.ab exports an older commit there).
``--store redis`` (or ``cluster``) runs the gateway on a Redis (a Redis Cluster) of its own instead of
the memory store: the count then holds the Redis client's work (packing the calls, reading the
replies) in place of the memory store's Python twins of the scripts. The after-answer writes then
overlap the next request's, so the count may move by a few bytecodes from run to run.
``--edge`` sends each request as bytes through the gateway's client-side HTTP protocol (uvicorn's
httptools protocol and what app/edge/http_protocol.py adds to it) on a stand-in transport, so the
count includes the request head's parsing and checks; without it the ASGI app is called directly.
``--store redis`` or ``--store cluster`` puts the state on a redis-server of its own or on a Redis
Cluster of 3 masters of its own (started and stopped here) instead of the memory store, so that the
count includes the store's request path (app/store/): the two read as a ratio, as bench_cluster's
CPU figures do. The count of a request waiting for Redis includes no waiting: only the code it runs.
On one Redis it also gives the bytes the gateway sent it per request (INFO ``total_net_input_bytes``
around the counted requests): a loopback write costs CPU in proportion.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
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


async def _measure(app: Any, requests: int, unique: bool = False, extra: dict[str, str] | None = None,
                   mark: Callable[[], None] = lambda: None) -> float:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/bench", "raw_path": b"/bench", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"bench"), (b"accept", b"*/*"),
                         *((k.lower().encode(), v.encode()) for k, v in (extra or {}).items())],
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
    mark()
    sys.settrace(_tracer)
    try:
        for i in range(requests):
            await app(request(i), receive, send)
    finally:
        sys.settrace(None)
    await asyncio.sleep(0.05)  # the last request's after-answer store lands
    mark()
    if set(statuses) != {200}:
        raise RuntimeError(f"the gateway answered {sorted(set(statuses))}, not only 200")
    return _count / requests


class _Transport:
    """Just enough of an asyncio transport for the protocol: it keeps what is written."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)


async def _measure_edge(app: Any, server: Any, requests: int, unique: bool = False,
                        extra: dict[str, str] | None = None) -> float:
    """Like ``_measure``, with each request's bytes fed to the client-side protocol."""
    import uvicorn
    from uvicorn.server import ServerState

    from app.edge import http_protocol

    make = getattr(http_protocol, "edge_protocol", None)
    protocol_class = make(server) if make is not None else http_protocol.GatewayHttpProtocol
    config = uvicorn.Config(app, lifespan="off", access_log=False, proxy_headers=False, date_header=False,
                            server_header=False)
    state = ServerState()
    transport = _Transport()
    protocol = protocol_class(config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop())
    protocol.connection_made(transport)

    def request(i: int) -> bytes:
        query = b"?n=%d" % i if unique else b""
        credential = "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items()).encode()
        return (b"GET /bench" + query + b" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\n"
                b"Accept: */*\r\n" + credential + b"\r\n")

    async def one(i: int) -> None:
        protocol.data_received(request(i))
        await asyncio.gather(*state.tasks)
        await asyncio.sleep(0)  # the coalesced write goes out at the end of the step

    for i in range(20):
        await one(-i - 1)
    global _count
    _count = 0
    transport.written.clear()
    sys.settrace(_tracer)
    try:
        for i in range(requests):
            await one(i)
    finally:
        sys.settrace(None)
    answers = transport.written.count(b"HTTP/1.1 ")
    if answers != requests or transport.written.count(b"HTTP/1.1 200 ") != requests:
        raise RuntimeError(f"the gateway did not answer 200 to every request: {bytes(transport.written[:300])!r}")
    return _count / requests


def _net_input(url: str) -> int:
    """The bytes the Redis has read from its clients (its INFO, read here, counted in them too)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("stats")["total_net_input_bytes"])
    finally:
        client.close()


def _redis_for(store: str) -> Any:
    """A started redis-server or Redis Cluster of this run's own (never a shared one: the run
    leaves keys behind), or None for the memory store."""
    if store == "memory":
        return None
    from tests.redis_topologies import RedisClusterProcesses
    from tests.support import RedisProcess

    return RedisProcess() if store == "redis" else RedisClusterProcesses(masters=3, replicas_each=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.opcount", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="the checkout whose app/ to measure (default: this one)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--case", default="gw_proxy")
    parser.add_argument("--edge", action="store_true", help="feed request bytes through the HTTP protocol")
    parser.add_argument("--store", choices=("memory", "redis", "cluster"), default="memory",
                        help="where the state lives: the memory store (default), a redis-server or a Redis "
                             "Cluster of 3 masters, each started here")
    args = parser.parse_args(argv)
    if args.source is not None:
        sys.path.insert(0, str(args.source.resolve()))
        for name in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
            del sys.modules[name]

    import uvloop

    from app.config import parse_config
    try:
        from app.gateway import Gateway
    except ImportError:  # a --source checkout from before the composition root had its own module
        from app.edge.server import Gateway  # type: ignore[attr-defined, no-redef]
    from tests.perf.configs import CASES
    from tests.perf.servers import backend_nginx
    from tests.support import free_port

    case = next(c for c in CASES if c.name == args.case)
    port = free_port()
    backend = backend_nginx(port).start(port)
    stack = contextlib.ExitStack()
    topology = _redis_for(args.store)
    redis = stack.enter_context(topology) if topology is not None else None
    try:
        tree = case.config(f"http://127.0.0.1:{port}")
        if redis is not None:
            tree["redis"] = {"url": redis.url if hasattr(redis, "url") else redis.nodes[0].url}
        config = parse_config(tree, {}, "opcount")

        sent: list[int] = []  # on one Redis, the bytes it had read when the count began and ended
        mark = (lambda: sent.append(_net_input(redis.url))) if args.store == "redis" else (lambda: None)

        async def run() -> float:
            gateway = Gateway(config)  # by default the memory store: no Redis traffic in the count
            await gateway.orchestrator.start()
            try:
                if args.edge:
                    return await _measure_edge(gateway, config.server, args.requests, case.unique_paths, case.headers)
                return await _measure(gateway, args.requests, case.unique_paths, case.headers, mark)
            finally:
                await gateway.orchestrator.close()

        per_request = uvloop.run(run())
    finally:
        backend.stop()
        stack.close()
    through = ", through the HTTP protocol" if args.edge else ""
    on = "" if args.store == "memory" else f", on {'one Redis' if args.store == 'redis' else 'a 3-master cluster'}"
    print(f"{per_request:.0f} bytecodes per request ({case.name}, {args.requests} requests{through}{on})")
    if len(sent) == 2:
        print(f"{(sent[1] - sent[0]) / args.requests:.0f} bytes sent to Redis per request (INFO total_net_input_bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
