"""The gateway under uvicorn: the one place its server settings are made, for the CLI and the tests."""

from __future__ import annotations

import uvicorn

from app.edge.http_protocol import edge_protocol
from app.edge.server import EdgeApp


def uvicorn_config(gateway: EdgeApp, host: str, port: int, *, loop: str = "uvloop",
                   log_level: str = "info") -> uvicorn.Config:
    server = gateway.config.server
    return uvicorn.Config(
        gateway, host=host, port=port, loop=loop, http=edge_protocol(server), lifespan="on",
        access_log=False, log_level=log_level, server_header=False, date_header=False,
        # Client identity and X-Forwarded-For trust are the gateway's own decisions (trusted_proxies).
        proxy_headers=False,
        timeout_keep_alive=server.limits.client_keepalive_timeout)
