"""The gateway under uvicorn: the one place its server settings are made, for the CLI and the tests.

One process serves the data listener and, with ``admin.listen``, the admin listener, both in the
same event loop (``listeners``, ``serve``): the admin API reads the very objects the requests use.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import uvicorn

from app.edge.drain import DrainingServer, exit_zero_on_sigterm
from app.edge.http_protocol import edge_protocol
from app.edge.server import EdgeApp
from app.edge.websocket_protocol import GatewayWebSocketProtocol


def uvicorn_config(gateway: EdgeApp, host: str, port: int, *, loop: str = "uvloop",
                   log_level: str = "info") -> uvicorn.Config:
    server = gateway.config.server
    context = gateway.tls_context
    return uvicorn.Config(
        gateway, host=host, port=port, loop=loop, http=edge_protocol(server, gateway.refused), lifespan="on",
        access_log=False, log_level=log_level, server_header=False, date_header=False,
        # Client identity and X-Forwarded-For trust are the gateway's own decisions (trusted_proxies).
        proxy_headers=False,
        timeout_graceful_shutdown=server.drain_timeout,
        timeout_keep_alive=server.limits.client_keepalive_timeout,
        ws=GatewayWebSocketProtocol, ws_max_size=server.websocket.max_message_size,
        # The gateway's own context (app/edge/tls.py), so that a reload's new certificate reaches
        # the listener: uvicorn would make a context of its own from file names.
        ssl_context_factory=None if context is None else lambda _config, _default: context)


def admin_config(gateway: EdgeApp, *, loop: str = "uvloop", log_level: str = "info") -> uvicorn.Config | None:
    """The admin listener's settings, None without ``admin.listen``. No lifespan: the data
    listener's starts the gateway."""
    listen = gateway.config.admin.listen
    if listen is None:
        return None
    return uvicorn.Config(gateway.admin, host=listen.host, port=listen.port, loop=loop, lifespan="off", interface="asgi3",
                          access_log=False, log_level=log_level, server_header=False, proxy_headers=False,
                          timeout_graceful_shutdown=gateway.config.server.drain_timeout)


def listeners(gateway: EdgeApp, host: str, port: int, *, loop: str = "uvloop",
              log_level: str = "info") -> list[uvicorn.Server]:
    """The data listener's server, then the admin listener's when the config asks for one."""
    delay = gateway.config.server.drain_delay
    servers: list[uvicorn.Server] = [DrainingServer(
        uvicorn_config(gateway, host, port, loop=loop, log_level=log_level), gateway.lifecycle, delay)]
    admin = admin_config(gateway, loop=loop, log_level=log_level)
    if admin is not None:
        servers.append(DrainingServer(admin, gateway.lifecycle, delay))
    return servers


async def serve(servers: Sequence[uvicorn.Server],
                sockets: Sequence[list[socket.socket] | None] | None = None) -> None:
    """Run the servers in this loop until every one has stopped. A signal reaches the last one
    started first; as it stops it hands the signal back to the one before (uvicorn restores the
    handler it replaced and raises the signal again), so the data listener stops last. ``sockets``:
    each server's listening sockets when bound already (the workers of app/edge/workers.py)."""
    given = sockets or [None] * len(servers)
    await asyncio.gather(*(server.serve(sockets=bound) for server, bound in zip(servers, given, strict=True)))


def run(servers: Sequence[uvicorn.Server], sockets: Sequence[list[socket.socket] | None] | None = None,
        beside: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
    """``serve`` in a new event loop of the kind the first server's config names, with ``beside``
    running as a task until the servers stop (a worker's metrics snapshots); a drain that SIGTERM
    began ends the process with status 0."""
    exit_zero_on_sigterm()
    with asyncio.Runner(loop_factory=servers[0].config.get_loop_factory()) as runner:
        runner.run(_serve_beside(servers, sockets, beside))


async def _serve_beside(servers: Sequence[uvicorn.Server], sockets: Sequence[list[socket.socket] | None] | None,
                        beside: Callable[[], Coroutine[Any, Any, None]] | None) -> None:
    task = None if beside is None else asyncio.create_task(beside())
    try:
        await serve(servers, sockets)
    finally:
        if task is not None:
            task.cancel()
