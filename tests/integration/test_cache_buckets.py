"""The cache in buckets (cache.buckets): the bound max_size keeps (README "Caching": each bucket
holds at most ceil(max_size / buckets) entries, the cache at most buckets x that), stats and
invalidation over every bucket, and the buckets spread over a cluster's masters."""

from __future__ import annotations

import asyncio
import math

from app.cache import protocol
from app.cache.policy import CacheRequest, StoreDecision
from app.cache.protocol import HIT, MAY_LOCK, MISS, WAIT, lookup_reply
from app.cache_manager import ApiCacheManager
from app.store import Store
from app.store.redis import RedisStore
from tests.redis_topologies import RedisClusterProcesses

BUCKETS, MAX_SIZE = 4, 10
SHARE = math.ceil(MAX_SIZE / BUCKETS)  # 3: the cache holds at most 12


async def _sizes(cache: ApiCacheManager) -> list[int]:
    """Each bucket's entries (its LRU index's size), from one stats batch."""
    replies = await cache.store.run(*protocol.stats_calls(cache.keys, SHARE))
    return [reply[2] for reply in replies]


async def test_max_size_holds_per_bucket_and_in_total(store: Store) -> None:
    cache = ApiCacheManager(max_size=MAX_SIZE, store=store, buckets=BUCKETS)
    paths = [f"/fill/{i}" for i in range(60)]
    for path in paths:
        await cache.set(path, None, path)
        sizes = await _sizes(cache)
        assert max(sizes) <= SHARE and sum(sizes) <= BUCKETS * SHARE, sizes
    assert await _sizes(cache) == [SHARE] * BUCKETS  # 60 paths fill every bucket to its share
    kept = [path for path in paths if await cache.get(path) is not None]
    assert len(kept) == BUCKETS * SHARE == (await cache.get_stats())["size"]
    # Each bucket kept its most recently written entries: its own LRU.
    for bucket in range(BUCKETS):
        mine = [path for path in paths if cache.bucket(path, b"").index == bucket]
        assert [path for path in kept if path in mine] == mine[-SHARE:]


async def test_stats_and_invalidation_cover_every_bucket(store: Store) -> None:
    cache = ApiCacheManager(store=store, buckets=BUCKETS)
    for i in range(20):
        await cache.set(f"/all/{i}", {"q": i}, i)
    assert len({cache.bucket(f"/all/{i}", b"q=%d" % i).index for i in range(20)}) == BUCKETS
    for i in range(20):
        assert await cache.get(f"/all/{i}", {"q": i}) == i
    stats = await cache.get_stats()
    assert (stats["hits"], stats["size"]) == (20, 20)
    assert await cache.invalidate("/all/1*") == 11  # 1 and 10-19, wherever they are
    assert await cache.invalidate("/all") == 9
    assert (await cache.get_stats())["size"] == 0


async def test_the_buckets_spread_over_the_clusters_masters(redis_cluster: RedisClusterProcesses,
                                                           key_prefix: str) -> None:
    store = RedisStore(cluster_nodes=redis_cluster.seeds, prefix=key_prefix)
    await store.start()
    try:
        cache = ApiCacheManager(store=store)  # the default: 16 buckets
        for i in range(64):
            await cache.set(f"/spread/{i}", None, i)
        holding = set()
        for address in redis_cluster.masters_now():
            with redis_cluster.node_at(address).client() as client:
                if any(True for _ in client.scan_iter(match=f"{key_prefix}:cache:*:e2:*", count=1000)):
                    holding.add(address)
        assert len(holding) == 3, holding  # the masters' own keyspaces, not the slot map's word
        assert (await cache.get_stats())["size"] == 64
        assert await cache.invalidate("/spread") == 64
    finally:
        await store.close()


def test_a_purge_is_one_call_per_bucket_its_uris_are_in() -> None:
    cache = ApiCacheManager(buckets=BUCKETS)
    uris = [f"/u/{i}" for i in range(40)]
    first = uris[0]
    elsewhere = next(u for u in uris if cache.bucket(u, b"").index != cache.bucket(first, b"").index)
    beside = next(u for u in uris[1:] if cache.bucket(u, b"").index == cache.bucket(first, b"").index)
    target = protocol.UriTarget(first, b"", ("id-a", "id-a-host"))
    # A URI's ids with and without the host, and another URI of the same bucket: one call.
    same = protocol.purge_calls(cache.bucket, [target, protocol.UriTarget(beside, b"", ("id-b",))])
    assert len(same) == 1 and same[0].slot == cache.bucket(first, b"").slot
    assert [k.rsplit(":", 1)[1] for k in same[0].keys[5:]] == ["id-a", "id-a-host", "id-b"]
    # A Location in another bucket: a second call, to that bucket's keys.
    split = protocol.purge_calls(cache.bucket, [target, protocol.UriTarget(elsewhere, b"", ("id-c",))])
    assert [call.slot for call in split] == [cache.bucket(first, b"").slot, cache.bucket(elsewhere, b"").slot]
    assert all(key.startswith(split[1].args[0].rsplit(":e2:", 1)[0]) for key in split[1].keys)


async def test_fills_coalesce_in_every_bucket_across_the_clusters_masters(
        redis_cluster: RedisClusterProcesses, key_prefix: str) -> None:
    """One filler per key and the others wait, whichever master the key's bucket is on; the fill's
    wake-up reaches the waiting replica over the cluster's pub/sub."""
    filler = RedisStore(cluster_nodes=redis_cluster.seeds, prefix=key_prefix)
    waiter = RedisStore(cluster_nodes=redis_cluster.seeds, prefix=key_prefix)
    heard: list[bytes] = []
    await filler.start()
    await waiter.start()
    try:
        cache = ApiCacheManager(store=filler)
        waiter.subscribe(cache.keys.channel, heard.append)
        assert await waiter.listening()
        owners = {}
        for i in range(64):  # a path on each master
            path = f"/co/{i}"
            owners.setdefault(filler.cluster.owners[cache.bucket(path, b"").slot], path)
        assert len(owners) == 3
        requests = {path: CacheRequest(method="GET", route="r", path=path) for path in owners.values()}
        ids = {path: cache.strategy.cache_key(request) for path, request in requests.items()}
        for path, entry_id in ids.items():
            first = lookup_reply((await filler.run(cache.lookup_call(requests[path], entry_id, entry_id, (), MAY_LOCK, "f")))[0])
            second = lookup_reply((await waiter.run(cache.lookup_call(requests[path], entry_id, entry_id, (), MAY_LOCK, "w")))[0])
            assert (first.code, first.locked, second.code) == (MISS, 1, WAIT)
        decision = StoreDecision(ttl_ms=60_000, grace_ms=0, swr_ms=0, vary=(), headers=[])
        await filler.run(*(cache.store_call(requests[path], entry_id, entry_id, decision, 200, b"v", "f")
                           for path, entry_id in ids.items()))
        for _ in range(100):
            if len(heard) == 3:
                break
            await asyncio.sleep(0.02)
        assert sorted(heard) == sorted(entry_id.encode() for entry_id in ids.values())
        for path, entry_id in ids.items():
            hit = lookup_reply((await waiter.run(cache.lookup_call(requests[path], entry_id, entry_id, (), MAY_LOCK, "w")))[0])
            assert (hit.code, hit.body) == (HIT, b"v")
    finally:
        await waiter.close()
        await filler.close()
