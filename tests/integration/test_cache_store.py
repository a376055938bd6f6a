"""The cache's scripts and library API, the same tests on the memory store and on a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis

from app.cache.protocol import DUE, FINAL, FRESH, HIT, MAY_LOCK, MISS, WAIT, WARM, UriTarget, peek_call, purge_calls
from app.cache.policy import CacheRequest, StoreDecision, uri_id
from app.cache_manager import ApiCacheManager, DefaultCacheStrategy
from app.store import Store


async def test_seed_example_runs_as_written_and_stats_add_up(store: Store) -> None:
    # The seed's example, plus await (and a store, so that it runs on both back ends).
    cache = ApiCacheManager(max_size=1000, store=store)

    await cache.set(
        request_path="/api/v1/agents",
        params={"status": "active"},
        value={"agents": [...]},
        metadata={"cache_time": 300}
    )

    cached_value = await cache.get("/api/v1/agents", {"status": "active"})
    assert cached_value == {"agents": ["..."]}  # JSON keeps the seed's placeholder as "..."

    await cache.invalidate(pattern="/api/v1/agents")

    stats = await cache.get_stats()
    assert stats == {"hits": 1, "misses": 0, "hit_rate": 1.0, "size": 0}


async def test_values_round_trip_and_stats_count_every_get(store: Store) -> None:
    cache = ApiCacheManager(max_size=100, store=store)
    agents = {"agents": [{"id": 1, "name": "a"}, {"id": 2, "name": "é"}]}
    assert await cache.set("/api/v1/agents", {"status": "active", "page": 2}, agents)
    # params are a set of pairs: their order does not matter
    assert await cache.get("/api/v1/agents", {"page": 2, "status": "active"}) == agents
    assert await cache.get("/api/v1/agents", {"status": "active"}) is None
    assert await cache.get("/api/v1/other") is None
    assert await cache.get("/api/v1/agents", {"page": "2", "status": "active"}) == agents
    stats = await cache.get_stats()
    assert (stats["hits"], stats["misses"], stats["size"]) == (2, 2, 1)
    assert stats["hit_rate"] == 0.5


async def test_entries_expire_after_the_smallest_ttl(store: Store) -> None:
    cache = ApiCacheManager(store=store, ttl=300, stale_grace=0)
    await cache.set("/short", None, {"v": 1}, metadata={"cache_time": 0.3})
    await cache.set("/long", None, {"v": 2})
    assert await cache.get("/short") == {"v": 1}
    await asyncio.sleep(0.45)
    assert await cache.get("/short") is None
    assert await cache.get("/long") == {"v": 2}
    assert (await cache.get_stats())["size"] == 1  # the expired one left the indexes too


async def test_invalidate_a_path_covers_everything_below_it_only(store: Store) -> None:
    cache = ApiCacheManager(store=store)
    paths = ["/api/v1/agents", "/api/v1/agents/7", "/api/v1/agents/7/logs", "/api/v1/agentsx",
             "/api/v1/threads", "/api/v2/agents"]
    for path in paths:
        await cache.set(path, None, path)
    assert await cache.invalidate("/api/v1/agents") == 3
    left = [path for path in paths if await cache.get(path) is not None]
    assert left == ["/api/v1/agentsx", "/api/v1/threads", "/api/v2/agents"]
    assert await cache.invalidate("/api/v1/agents/") == 0  # a trailing slash means the same path
    assert (await cache.get_stats())["size"] == 3


async def test_invalidate_with_a_glob(store: Store) -> None:
    cache = ApiCacheManager(store=store)
    paths = ["/api/v1/agents", "/api/v2/agents", "/api/v2/agents/9", "/api/v1/threads", "/other/agents",
             "/api/v1.5/agents"]
    for path in paths:
        await cache.set(path, {"q": 1}, path)
    assert await cache.invalidate("/api/*/agents") == 3  # '*' runs over '/' and '.', as in fnmatch
    left = [path for path in paths if await cache.get(path, {"q": 1}) is not None]
    assert left == ["/api/v2/agents/9", "/api/v1/threads", "/other/agents"]
    assert await cache.invalidate("/api/v[0-9]/*") == 2
    assert await cache.invalidate("*") == 1
    assert (await cache.get_stats())["size"] == 0


async def test_invalidate_the_root_removes_everything(store: Store) -> None:
    cache = ApiCacheManager(store=store)
    for i in range(5):
        await cache.set(f"/p{i}/x", None, i)
    assert await cache.invalidate("/") == 5
    assert (await cache.get_stats())["size"] == 0


async def test_max_size_keeps_the_most_recently_read(store: Store) -> None:
    cache = ApiCacheManager(max_size=10, store=store, buckets=1)  # one LRU: exact
    for i in range(10):
        await cache.set(f"/item/{i}", None, i)
        await asyncio.sleep(0.002)  # distinct millisecond scores: a clear LRU order
    for i in (0, 1, 2, 3, 4):  # read the five oldest: now they are the most recently read
        assert await cache.get(f"/item/{i}") == i
        await asyncio.sleep(0.002)
    for i in range(10, 15):
        await cache.set(f"/item/{i}", None, i)
        await asyncio.sleep(0.002)
    kept = [i for i in range(15) if await cache.get(f"/item/{i}") is not None]
    assert kept == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
    assert (await cache.get_stats())["size"] == 10


async def _stored_bytes(cache: ApiCacheManager, store: Store) -> tuple[int, int]:
    """The stats hashes' running sums, and the per-entry sizes summed afresh, over the buckets."""
    counted = summed = 0
    for bucket in cache.keys.buckets:
        counted += int((await store.hgetall(bucket.stats)).get(b"bytes", 0))
        summed += sum(int(v) for v in (await store.hgetall(bucket.sizes)).values())
    return counted, summed


async def test_max_bytes_keeps_the_most_recently_read_within_the_budget(store: Store) -> None:
    cache = ApiCacheManager(max_size=1000, max_bytes=10_000, store=store, buckets=1)  # one LRU: exact
    value = "x" * 1500  # ~1.5 KB a body, under compress_min_size: kept as it is
    for i in range(6):
        await cache.set(f"/item/{i}", None, value)
    assert await cache.get("/item/0") == value  # now the most recently read
    for i in range(6, 9):
        await cache.set(f"/item/{i}", None, value)
    kept = [i for i in range(9) if await cache.get(f"/item/{i}") is not None]
    counted, summed = await _stored_bytes(cache, store)
    assert counted == summed and 9_000 < counted <= 10_000
    assert kept[0] == 0 and kept[-3:] == [6, 7, 8] and 1 not in kept and len(kept) == 6
    # Written again, an entry counts once; its new size replaces the old one.
    await cache.set("/item/8", None, "y" * 10)
    counted, summed = await _stored_bytes(cache, store)
    assert counted == summed < 9_000
    assert await cache.invalidate("/") == 6
    assert await _stored_bytes(cache, store) == (0, 0)


async def test_bytes_of_expired_entries_leave_the_count(store: Store) -> None:
    cache = ApiCacheManager(max_bytes=10_000, store=store, ttl=300, stale_grace=0, buckets=1)
    for i in range(3):
        await cache.set(f"/short/{i}", None, "x" * 1000, metadata={"cache_time": 0.2})
    await cache.set("/long", None, "x" * 1000)
    await asyncio.sleep(0.35)
    assert (await cache.get_stats())["size"] == 1  # the stats call drops what expired
    counted, summed = await _stored_bytes(cache, store)
    assert counted == summed and 1000 < counted < 2000


async def test_index_entries_of_an_older_build_are_evicted_too(store: Store, redis_client: redis.Redis) -> None:
    # Its index members were bare ids (now "<path>\0<id>"): eviction still deletes the entry.
    cache = ApiCacheManager(max_size=1, store=store, buckets=1)
    bucket = cache.keys.buckets[0]
    if store.shared:
        redis_client.zadd(bucket.lru, {"old": 1})
        redis_client.hset(bucket.entry("old"), "t", "1 1 1 1")
    else:
        store.db.set(bucket.lru, {b"old": 1})
        store.db.set(bucket.entry("old"), {b"t": b"1 1 1 1"})
    await cache.set("/new", None, "v")
    assert (await cache.get_stats())["size"] == 1
    assert await cache.get("/new") == "v"
    if store.shared:
        assert not redis_client.exists(bucket.entry("old"))
    else:
        assert not store.db.exists(bucket.entry("old"))


async def test_big_bodies_are_compressed_and_too_big_ones_not_kept(store: Store) -> None:
    cache = ApiCacheManager(store=store, compress_min_size=100, max_body_size=50_000)
    value = {"text": "abc" * 5000}
    assert await cache.set("/big", None, value)
    assert await cache.get("/big") == value
    assert not await cache.set("/huge", None, {"text": "x" * 60_000})
    assert await cache.get("/huge") is None
    if hasattr(store, "redis"):  # in Redis the body is kept compressed
        entry_id = cache.strategy.cache_key(CacheRequest(method="GET", route="", path="/big"))
        stored = await store.redis.hget(cache.bucket("/big", b"").entry(entry_id), "b")
        assert len(stored) < 1000


def _decision(ttl_ms: int = 60_000) -> StoreDecision:
    return StoreDecision(ttl_ms=ttl_ms, grace_ms=0, swr_ms=0, vary=(), headers=[(b"content-type", b"text/plain")])


async def test_one_filler_per_key_the_others_wait(store: Store) -> None:
    cache = ApiCacheManager(store=store)
    request = CacheRequest(method="GET", route="r", path="/cold")
    entry_id = cache.strategy.cache_key(request)
    first = await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "tok-a")))
    second = await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "tok-b")))
    final = await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), FINAL)))
    assert (first[0], first[1]) == (MISS, 1)   # takes the lock: goes to the backend
    assert (second[0], second[1]) == (WAIT, 0)  # waits for the first
    assert (final[0], final[1]) == (MISS, 0)    # a final look never waits
    await store.run(cache.store_call(request, entry_id, entry_id, _decision(), 200, b"body", "tok-a"))
    hit = await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "tok-b")))
    assert hit[0] == HIT and hit[5] == b"body"
    stats = await cache.get_stats()
    assert (stats["hits"], stats["misses"]) == (1, 2)  # a WAIT is not counted: its retry is


async def test_a_fill_is_announced_only_when_someone_waits(store: Store, redis_client: redis.Redis) -> None:
    # Every replica's listener handles each message: a miss nobody waits for sends none.
    cache = ApiCacheManager(store=store)
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(cache.keys.channel)
    pubsub.get_message(timeout=1.0)
    request = CacheRequest(method="GET", route="r", path="/p")
    ids = [cache.strategy.cache_key(CacheRequest(method="GET", route="r", path="/p", query=b"n=%d" % n))
           for n in range(4)]
    for entry_id in ids:
        assert (await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "filler"))))[1] == 1
    for entry_id in ids[2:]:  # someone waits for these two (and looks again)
        for _ in range(2):
            waiter = await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "waiter")))
            assert waiter[0] == WAIT
    for entry_id in ids[0::2]:
        await store.run(cache.store_call(request, entry_id, entry_id, _decision(), 200, b"body", "filler"))
    for entry_id in ids[1::2]:
        assert await store.call(*_args(cache.release_call(request, entry_id, "filler", 0))) == 1
    heard = []
    while (message := pubsub.get_message(timeout=0.2 if store.shared else 0.01)) is not None:
        heard.append(message["data"].decode())
    pubsub.close()
    # The memory store has one replica: its waiters are woken in-process, never by a message.
    assert heard == (ids[2:] if store.shared else [])
    for entry_id in ids:  # every lock is free
        assert (await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "next"))))[0] != WAIT


async def test_an_answer_that_cannot_be_kept_frees_waiters_from_the_lock(store: Store) -> None:
    cache = ApiCacheManager(store=store)
    request = CacheRequest(method="GET", route="r", path="/nocache")
    entry_id = cache.strategy.cache_key(request)
    assert (await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "a"))))[1] == 1
    assert await store.call(*_args(cache.release_call(request, entry_id, "wrong", 10_000))) == 0
    assert await store.call(*_args(cache.release_call(request, entry_id, "a", 10_000))) == 1
    again = await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "b")))
    assert (again[0], again[1]) == (MISS, 0)  # "pass": straight to the backend, no lock


async def test_warm_peek_locks_only_when_due(store: Store) -> None:
    cache = ApiCacheManager(store=store)
    request = CacheRequest(method="GET", route="r", path="/warm")
    entry_id = cache.strategy.cache_key(request)
    due = await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), WARM, "w1", 100)))
    assert (due[0], due[1]) == (DUE, 1)
    await store.run(cache.store_call(request, entry_id, entry_id, _decision(60_000), 200, b"x", "w1"))
    fresh = await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), WARM, "w2", 100)))
    assert fresh[0] == FRESH  # a tenth of its life left is 6 s away
    soon = await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), WARM, "w3", 1000)))
    assert (soon[0], soon[1]) == (DUE, 1)  # "due with all of its life left": due now
    assert (await cache.get_stats())["hits"] == 0  # warming is not traffic


async def test_vary_names_are_learned_from_the_store(store: Store) -> None:
    cache = ApiCacheManager(store=store)
    strategy = DefaultCacheStrategy()
    fr = CacheRequest(method="GET", route="r", path="/v", headers=[(b"accept-language", b"fr")])
    base = strategy.cache_key(fr)
    variant = strategy.cache_key(fr, ("accept-language",))
    decision = StoreDecision(ttl_ms=60_000, grace_ms=0, swr_ms=0, vary=("accept-language",), headers=[])
    await store.run(cache.store_call(fr, variant, base, decision, 200, b"bonjour", ""))
    # A replica that does not know the resource varies looks under the base key: told to re-key.
    told = await store.call(*_args(cache.lookup_call(fr, base, base, (), FINAL)))
    assert told[0] == 3 and told[3] == b"accept-language"
    assert (await cache.get_entry(fr)).body == b"bonjour"
    en = CacheRequest(method="GET", route="r", path="/v", headers=[(b"accept-language", b"en")])
    assert await cache.get_entry(en) is None


def _args(call):  # ScriptCall -> store.call's arguments
    return call.script, call.keys, call.args


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_only_get_and_head_are_looked_up(method: str) -> None:
    from app.cache.policy import Lookup
    assert DefaultCacheStrategy().lookup(CacheRequest(method=method, route="r", path="/")) is Lookup.BYPASS


async def test_a_purge_during_a_fill_refuses_its_store(store: Store) -> None:
    """The lock lists the fill under its URI: a write's peek sees it, its purge frees the lock (the
    next lookup fills anew) and the fill's store, landing after, is refused."""
    cache = ApiCacheManager(store=store)
    request = CacheRequest(method="GET", route="r", path="/written")
    entry_id = cache.strategy.cache_key(request)
    target = UriTarget("/written", b"", (uri_id("", "/written", b""),))
    assert await store.call(*_args(peek_call(cache.bucket, target))) == 0
    assert (await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "f"))))[1] == 1
    assert await store.call(*_args(peek_call(cache.bucket, target))) == 1
    await store.run(*purge_calls(cache.bucket, [target]))
    assert await store.call(*_args(peek_call(cache.bucket, target))) == 0
    assert (await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "g"))))[1] == 1
    assert (await store.run(cache.store_call(request, entry_id, entry_id, _decision(), 200, b"old", "f")))[0] == [0, 0, 0]
    assert (await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), FINAL))))[0] == MISS
    assert (await store.run(cache.store_call(request, entry_id, entry_id, _decision(), 200, b"new", "g")))[0][2] == 1
    hit = await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), FINAL)))
    assert hit[0] == HIT and hit[5] == b"new"


async def test_a_released_fill_leaves_its_uri(store: Store) -> None:
    cache = ApiCacheManager(store=store)
    request = CacheRequest(method="GET", route="r", path="/unkept")
    entry_id = cache.strategy.cache_key(request)
    target = UriTarget("/unkept", b"", (uri_id("", "/unkept", b""),))
    assert (await store.call(*_args(cache.lookup_call(request, entry_id, entry_id, (), MAY_LOCK, "a"))))[1] == 1
    assert await store.call(*_args(cache.release_call(request, entry_id, "a", 0))) == 1
    assert await store.call(*_args(peek_call(cache.bucket, target))) == 0  # a write has nothing to purge


async def test_an_evicted_or_invalidated_entry_leaves_its_uris_index(store: Store, redis_client: redis.Redis) -> None:
    # Every URI stored is listed in a uri index, kept as long as its entry would be. Evicted or
    # invalidated, the entry used to leave its index behind until then: with unique URIs (a query
    # string per request), one key per URI ever stored, whatever max_size.
    cache = ApiCacheManager(max_size=3, store=store, buckets=1)
    for n in range(30):
        await cache.set(f"/u/{n}", None, n)

    def uri_keys() -> list[str]:
        if store.shared:
            return [k.decode() for k in redis_client.scan_iter(match=f"{store.prefix}:cache:*:uri:*", count=1000)]
        return [k for k in store.db.keys() if ":uri:" in k]

    assert len(uri_keys()) == 3
    assert [await cache.get(f"/u/{n}") for n in (27, 28, 29)] == [27, 28, 29]
    assert await cache.invalidate("/u") == 3
    assert uri_keys() == []
