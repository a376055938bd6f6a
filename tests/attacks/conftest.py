"""A gateway as the attacks meet it: ``/public/*`` and ``/strip/*`` (strip_prefix) in front of a
backend that records the raw bytes it receives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.config import parse_config
from tests.attacks.raw import RawBackend
from tests.support import GatewayThread


def routes(backend: RawBackend) -> list[dict[str, Any]]:
    return [{"path": "/public/*", "target": backend.url},
            {"path": "/strip/*", "target": backend.url, "strip_prefix": True},
            {"path": "/small/*", "target": backend.url, "max_body_size": 1000}]


def edge_gateway(backend: RawBackend, **server: Any) -> GatewayThread:
    return GatewayThread(parse_config({"server": {"access_log": False, **server},
                                       "router": {"routes": routes(backend)}}, {}))


@pytest.fixture
def raw_backend() -> Iterator[RawBackend]:
    with RawBackend() as backend:
        yield backend


@pytest.fixture
def gateway(raw_backend: RawBackend) -> Iterator[GatewayThread]:
    with edge_gateway(raw_backend) as server:
        yield server
