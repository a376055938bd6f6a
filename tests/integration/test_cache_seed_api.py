"""The seed's cache API as the security probe found it wrong (issue 15, item 8): eviction that
follows recency exactly, and values JSON cannot hold refused by name."""

from __future__ import annotations

import datetime
import decimal

import pytest

from app.cache_manager import ApiCacheManager
from app.store import Store


# One bucket (cache.buckets: 1): one LRU for the whole cache, exact on every store.


async def test_eviction_follows_recency_exactly(store: Store) -> None:
    cache = ApiCacheManager(max_size=10, store=store, buckets=1)
    for i in range(10):  # all within a millisecond or two: equal times must not decide
        await cache.set(f"/k/{i}", None, {"i": i})
    assert await cache.get("/k/0") == {"i": 0}  # now the most recent
    for i in range(10, 15):
        await cache.set(f"/k/{i}", None, {"i": i})
    kept = [i for i in range(15) if await cache.get(f"/k/{i}") is not None]
    assert kept == [0, 6, 7, 8, 9, 10, 11, 12, 13, 14]


async def test_a_read_of_a_later_written_entry_counts_over_an_earlier_write(store: Store) -> None:
    cache = ApiCacheManager(max_size=3, store=store, buckets=1)
    for name in ("b", "a", "c"):
        await cache.set(f"/{name}", None, name)
    await cache.get("/b")
    await cache.get("/a")
    await cache.set("/d", None, "d")  # c, the least recently used, goes; not a (lexically first)
    assert [await cache.get(f"/{n}") for n in "abcd"] == ["a", "b", None, "d"]


@pytest.mark.parametrize("value", [object(), {"when": datetime.timedelta(seconds=1)}, [decimal.Decimal("1.5")],
                                   {"fn": print}, {"nested": [{"deep": b"bytes"}]}])
async def test_a_value_json_cannot_hold_is_a_type_error_naming_its_type(value: object) -> None:
    cache = ApiCacheManager(max_size=10)
    with pytest.raises(TypeError) as caught:
        await cache.set("/v", None, value)
    bad = value if not isinstance(value, dict | list) else None
    names = {type(x).__name__ for x in (bad, datetime.timedelta(1), decimal.Decimal(1), print, b"") if x is not None}
    assert any(name in str(caught.value) for name in names), caught.value
    assert await cache.get("/v") is None


async def test_the_seeds_placeholder_and_json_shapes_stay_accepted() -> None:
    cache = ApiCacheManager(max_size=10)
    assert await cache.set("/v", None, {"agents": [...], "tags": ("a", "b"), "n": None, "f": 1.5})
    assert await cache.get("/v") == {"agents": ["..."], "tags": ["a", "b"], "n": None, "f": 1.5}
