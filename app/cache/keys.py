"""The cache's Redis keys. Every one carries the same hash tag, ``{c}``.

One tag for the whole cache is a deliberate cost: the fleet-wide LRU index, the path index and the
counters are single keys that every store and lookup script updates atomically with the entry, so
they must share a slot with every entry. On Redis Cluster the whole cache therefore lives on one
shard (README "Caching").
"""

from __future__ import annotations

from app.store import Store

TAG = "c"


class CacheKeys:
    __slots__ = ("_base", "entry_prefix", "lock_prefix", "pass_prefix", "vary_prefix", "lru", "exp", "paths",
                 "stats", "channel")

    def __init__(self, store: Store) -> None:
        self._base = store.key("cache", TAG)
        # Per-entry keys are a prefix and the id (the lookup builds them on every request). "e2" is
        # the entry layout's version: replicas of builds with another layout (a fleet mid-upgrade)
        # never read each other's entries, they just do not share them until all are upgraded.
        self.entry_prefix = f"{self._base}:e2:"
        self.lock_prefix = f"{self._base}:lock:"    # the fill lock: the filler's token
        self.pass_prefix = f"{self._base}:pass:"    # set: the answer was not kept, do not queue
        self.vary_prefix = f"{self._base}:vary:"    # by base id: the resource's Vary names
        # The three indexes name an entry alike: "<path>\0<id>" (manager.index_member).
        self.lru = f"{self._base}:lru"        # ZSET entry -> last read (ms): the LRU order
        self.exp = f"{self._base}:exp"        # ZSET entry -> end of grace (ms): index cleanup
        self.paths = f"{self._base}:paths"    # ZSET entry, all scored 0: lexicographic, by path
        self.stats = f"{self._base}:stats"    # HASH hits, misses, evictions
        self.channel = store.channel("cache")  # ids of filled entries: wakes coalesced waiters

    def entry(self, entry_id: str) -> str:
        return self.entry_prefix + entry_id

    def lock(self, entry_id: str) -> str:
        return self.lock_prefix + entry_id

    def pass_marker(self, entry_id: str) -> str:
        return self.pass_prefix + entry_id

    def vary(self, base_id: str) -> str:
        return self.vary_prefix + base_id
