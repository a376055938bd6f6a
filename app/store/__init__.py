"""The shared state: ``create_store`` picks the back end from the config."""

from app.config import RedisSection
from app.store.base import ScriptCall, Store, StoreError, StoreUnavailable
from app.store.memory import MemoryDB, MemoryStore


def create_store(settings: RedisSection) -> Store:
    """Redis when one is configured (a URL, a Redis Cluster's nodes or a Sentinel group), else the
    embedded memory store."""
    if not settings.configured:
        return MemoryStore(prefix=settings.prefix)
    from app.store.redis import RedisStore

    return RedisStore(settings.url, settings.prefix, cluster_nodes=settings.cluster_nodes, sentinel=settings.sentinel,
                      max_connections=settings.max_connections,
                      socket_timeout=settings.socket_timeout, connect_timeout=settings.connect_timeout,
                      retry_after_failure=settings.retry_after_failure)


__all__ = ["MemoryDB", "MemoryStore", "ScriptCall", "Store", "StoreError", "StoreUnavailable", "create_store"]
