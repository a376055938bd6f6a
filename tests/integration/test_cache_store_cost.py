"""What a cache script costs Redis, counted (INFO commandstats on a redis-server of the test's own,
where nothing else runs): the commands of a new entry's store and of a hit."""

from __future__ import annotations

import redis

from app.cache.policy import CacheRequest, StoreDecision
from app.cache.protocol import FILL_LISTED_MS, HIT, MAY_LOCK, MISS, lookup_reply
from app.cache_manager import ApiCacheManager
from app.store.redis import RedisStore
from tests.support import RedisProcess

_DECISION = StoreDecision(ttl_ms=60_000, grace_ms=0, swr_ms=0, vary=(), headers=[(b"content-type", b"text/plain")])


def _calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}


def _commands_run(client: redis.Redis, before: dict[str, int]) -> dict[str, int]:
    """The commands since ``before``, but the EVALSHA itself and the INFO that reads them."""
    after = _calls(client)
    ran = {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}
    ran.pop("info", None)
    ran.pop("evalsha", None)
    return ran


async def test_a_new_entrys_store_and_a_hit_count_their_redis_commands() -> None:
    with RedisProcess() as server:
        client = redis.Redis(port=server.port)
        store = RedisStore(server.url)
        await store.start()
        try:
            for max_bytes in (None, 10_000_000):
                cache = ApiCacheManager(store=store, max_bytes=max_bytes, buckets=1)
                request = CacheRequest(method="GET", route="r", path=f"/cost/{max_bytes}")
                entry_id = cache.strategy.cache_key(request)
                for i in range(3):  # the bucket has entries and counters already
                    other = CacheRequest(method="GET", route="r", path=f"/other/{max_bytes}/{i}")
                    other_id = cache.strategy.cache_key(other)
                    await store.run(cache.store_call(other, other_id, other_id, _DECISION, 200, b"x", ""))
                before = _calls(client)
                miss = lookup_reply((await store.run(cache.lookup_call(request, entry_id, entry_id, (),
                                                                       MAY_LOCK, "tok")))[0])
                assert (miss.code, miss.locked) == (MISS, 1)
                # TIME, HMGET, MGET of vary and pass, SET NX of the lock, the fill listed under
                # its URI (HSET, PEXPIRE NX), HINCRBY misses.
                assert sum(_commands_run(client, before).values()) == 7
                before = _calls(client)
                await store.run(cache.store_call(request, entry_id, entry_id, _DECISION, 200, b"body", "tok"))
                stored = _commands_run(client, before)
                # HGET of the fill's listing; TIME; the entry's HSET and PEXPIRE; HMGET clock,
                # bytes and evictions; 3 ZADD; the size's HSET; DEL vary and pass; the uri index's
                # HSET, PEXPIRE GT (the lock listed the fill with a time to live, raised only when
                # the entry outlives it: below) and HLEN; ZRANGEBYSCORE for expired entries;
                # ZCARD; HSET clock and bytes; GETDEL of the lock.
                assert sum(stored.values()) == 17, stored
                before = _calls(client)
                hit = lookup_reply((await store.run(cache.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "again")))[0])
                assert hit.code == HIT
                assert sum(_commands_run(client, before).values()) == 6  # TIME, HMGET, HGET and HSET clock, ZADD, HINCRBY hits
                long_kept = StoreDecision(ttl_ms=FILL_LISTED_MS + 60_000, grace_ms=0, swr_ms=0, vary=(),
                                          headers=_DECISION.headers)
                later = CacheRequest(method="GET", route="r", path=f"/cost/{max_bytes}/long")
                later_id = cache.strategy.cache_key(later)
                await store.run(cache.lookup_call(later, later_id, later_id, (),
                                                  MAY_LOCK, "tok"))
                before = _calls(client)
                await store.run(cache.store_call(later, later_id, later_id, long_kept, 200, b"body", "tok"))
                assert sum(_commands_run(client, before).values()) == 17  # the same calls: GT raises the time
            # A full bucket (the steady state under unique URLs): each store evicts one entry.
            client.flushdb()
            full = ApiCacheManager(store=store, max_size=2, buckets=1)
            for i in range(3):
                request = CacheRequest(method="GET", route="r", path=f"/full/{i}")
                entry_id = full.strategy.cache_key(request)
                await store.run(full.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "tok"))
                before = _calls(client)
                evicted, _, stored_now = (await store.run(
                    full.store_call(request, entry_id, entry_id, _DECISION, 200, b"body", "tok")))[0]
                assert stored_now == 1
            # The store's 17, and the evicted entry's ZPOPMIN, 2 ZREM, HGET and HDEL of its size, its
            # URI's listing (HGET of the entry's uri id, HGET and HDEL of the member) and its DEL.
            assert evicted == 1
            assert sum(_commands_run(client, before).values()) == 17 + 9
        finally:
            await store.close()
            client.close()
