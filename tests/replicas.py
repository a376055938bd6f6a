"""Replicas of the pipeline in this process, on one shared store, each behind its own ASGI client:
for tests of what one replica's request does to another's (invalidation, revalidation), on the
memory store and on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest

from app.config import GatewayConfig
from app.edge.proxy import ProxyApp
from app.pipeline.orchestrator import ApiGatewayOrchestrator
from app.store import MemoryStore, Store
from app.store.redis import RedisStore


@dataclass
class Replica:
    orchestrator: ApiGatewayOrchestrator
    client: httpx.AsyncClient
    host: str | None = None  # the Host header its requests carry unless told otherwise

    @property
    def store(self) -> Store:
        return self.orchestrator.store

    async def send(self, method: str, uri: str, host: str | None = None, **headers: str) -> httpx.Response:
        host = host or self.host
        return await self.client.request(method, uri, headers={"Host": host, **headers} if host else headers)

    async def get(self, uri: str, host: str | None = None, **headers: str) -> httpx.Response:
        return await self.send("GET", uri, host, **headers)


@asynccontextmanager
async def replicas_on(kind: str, config: GatewayConfig, request: pytest.FixtureRequest, key_prefix: str,
                      host: str | None = None, count: int = 2) -> AsyncIterator[list[Replica]]:
    """``count`` started replicas on one store: ``kind`` "memory" (one MemoryStore shared) or
    "redis" (a RedisStore each, on the test Redis; the ``redis_client`` fixture removes the keys)."""
    if kind == "memory":
        shared = MemoryStore(prefix=key_prefix)
        stores: list[Store] = [shared] * count
    else:
        request.getfixturevalue("redis_client")
        url = request.getfixturevalue("redis_url")
        stores = [RedisStore(url, prefix=key_prefix) for _ in range(count)]
    replicas = []
    try:
        for store in stores:
            orchestrator = ApiGatewayOrchestrator(config, store)
            await orchestrator.start()
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=ProxyApp(orchestrator)),
                                       base_url="http://gateway", timeout=10)
            replicas.append(Replica(orchestrator, client, host))
        yield replicas
    finally:
        for replica in replicas:
            await replica.client.aclose()
            await replica.orchestrator.close()
