"""The seed's cache manager: CacheEntry, CacheStrategy, DefaultCacheStrategy, ApiCacheManager.

The parts live in ``app.cache``; this module is the public face.
"""

from app.cache.entry import CacheEntry
from app.cache.manager import ApiCacheManager
from app.cache.policy import CacheRequest, CacheStrategy, DefaultCacheStrategy, Lookup, StoreDecision
from app.cache.stage import CacheStage

__all__ = ["ApiCacheManager", "CacheEntry", "CacheRequest", "CacheStage", "CacheStrategy",
           "DefaultCacheStrategy", "Lookup", "StoreDecision"]
