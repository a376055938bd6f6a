"""Whether Redis's memory settings can starve the rate limiter: read once at start.

A Redis that is full refuses writes (``noeviction``: "OOM command not allowed"), and the limiter then
fails open; one whose policy evicts may drop a client's rate-limit keys (they carry a time to live,
so ``volatile-*`` policies may pick them as well as ``allkeys-*``), which forgets what the client
spent. The cache is the one part whose size grows with traffic: its budget must fit in
``maxmemory``. Nothing here is on the request path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("apigw.store")

# Policies under which Redis deletes keys the gateway relies on; "noeviction" refuses writes instead.
_EVICTING = ("allkeys-", "volatile-")


@dataclass(frozen=True, slots=True)
class MemoryLimit:
    """One master's ``maxmemory`` (bytes, 0: unbounded) and ``maxmemory-policy``."""

    address: str
    maxmemory: int
    policy: str


def memory_warnings(limits: list[MemoryLimit], cache_budget: int | None, cache_only: bool = False) -> list[str]:
    """What is wrong with these masters' settings for a cache that may hold ``cache_budget`` bytes
    (None: no cache in this store; ``cache_only``: a Redis of the cache's own, where eviction drops no
    rate-limit key). On a cluster the cache lives on one master, so the smallest
    bounded master is the one it must fit in."""
    warnings = []
    for limit in limits:
        # Without maxmemory (0) Redis never evicts, whatever the policy says.
        if limit.maxmemory > 0 and limit.policy.startswith(_EVICTING) and not cache_only:
            warnings.append(
                f"redis at {limit.address} has maxmemory-policy {limit.policy}: when it is full it may evict "
                "rate-limit keys (they carry a time to live), and the clients they counted start afresh; "
                "use noeviction and bound the cache with cache.max_bytes")
    bounded = [limit for limit in limits if limit.maxmemory > 0]
    if cache_budget is not None and bounded:
        smallest = min(bounded, key=lambda limit: limit.maxmemory)
        if cache_budget >= smallest.maxmemory:
            warnings.append(
                f"the cache may hold up to {cache_budget} bytes (cache.max_bytes, or cache.max_size, as "
                f"its buckets round it up, x cache.max_body_size)"
                f" but redis at {smallest.address} has maxmemory {smallest.maxmemory}: "
                + ("a full cache can fill it, and then cache writes are refused; " if cache_only else
                   "a full cache can fill it, and then rate limits fail open or keys are evicted; ")
                + "set cache.max_bytes well below maxmemory")
    return warnings


def log_memory_warnings(limits: list[MemoryLimit] | None, cache_budget: int | None, cache_only: bool = False) -> None:
    """``limits`` None: the store could not read them (CONFIG disabled or renamed, as on managed Redis)."""
    if limits is None:
        log.info("could not read redis's maxmemory and maxmemory-policy (CONFIG GET refused): "
                 "not checking that the cache fits beside the rate limits")
        return
    for warning in memory_warnings(limits, cache_budget, cache_only):
        log.warning(warning)
