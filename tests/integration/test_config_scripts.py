"""lua/config_change.lua and lua/config_read.lua against a real Redis, and their twins: same replies."""

from __future__ import annotations

import asyncio
import time

import orjson

from app.store import Store


def _keys(store: Store) -> list[str]:
    return [store.key("config", "config", "routes"), store.key("config", "config", "version")]


async def test_read_before_any_change_is_version_zero(store: Store) -> None:
    assert await store.call("config_read", _keys(store)) == [0]


async def test_change_bumps_the_version_and_stores_each_override(store: Store) -> None:
    keys = _keys(store)
    spec = '{"path":"/a","targets":[],"method":["GET"]}'  # [] must survive (no cjson round trip)
    assert await store.call("config_change", keys, ["ch", "set", "a", spec, "b", "null"]) == 1
    reply = await store.call("config_read", keys)
    assert reply[0] == 1
    stored = dict(zip(reply[1::2], reply[2::2], strict=True))
    assert orjson.loads(stored[b"a"]) == {"version": 1, "spec": {"path": "/a", "targets": [], "method": ["GET"]}}
    assert stored[b"a"].endswith(spec.encode() + b"}")
    assert orjson.loads(stored[b"b"]) == {"version": 1, "spec": None}

    # "" drops the override; a later write carries the later version.
    assert await store.call("config_change", keys, ["ch", "set", "b", "", "c", '{"path":"/c"}']) == 2
    reply = await store.call("config_read", keys)
    stored = dict(zip(reply[1::2], reply[2::2], strict=True))
    assert set(stored) == {b"a", b"c"}
    assert orjson.loads(stored[b"c"])["version"] == 2


async def test_reset_drops_every_override_but_keeps_counting(store: Store) -> None:
    keys = _keys(store)
    await store.call("config_change", keys, ["ch", "set", "a", '{"path":"/a"}'])
    assert await store.call("config_change", keys, ["ch", "reset"]) == 2
    assert await store.call("config_read", keys) == [2]


async def test_every_change_publishes_its_version(store: Store) -> None:
    channel = store.channel("config-test")
    got: list[bytes] = []
    store.subscribe(channel, got.append)
    keys = _keys(store)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:  # the subscription may take a moment to attach
        await store.call("config_change", keys, [channel, "set", "a", '{"path":"/a"}'])
        await asyncio.sleep(0.05)
    assert got
    assert int(got[-1]) == int((await store.call("config_read", keys))[0])
