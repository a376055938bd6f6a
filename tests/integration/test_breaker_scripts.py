"""The breaker scripts (lua/breaker_*.lua) and their twins: one contract, run on both stores."""

from __future__ import annotations

import asyncio

from app.store import Store

# failure_threshold, success_threshold, recovery_ms, rate_threshold, window_ms, min_calls
CONFIG = [3, 2, 200, 0, 60000, 20]


def _record(store: Store, key: str, gen: int, outcome: int, probe: int = 0, batch: int = 0,
            config: list[object] = CONFIG):  # type: ignore[no-untyped-def]
    return store.call("breaker_record", [key], [gen, outcome, probe, batch, *config])


def _state(reply: list[object]) -> tuple[object, ...]:
    """(flag, state, gen, failures, event): the open time left is checked on its own."""
    return reply[0], reply[1], reply[2], reply[3], reply[5]


async def test_failures_open_once_and_stale_outcomes_are_dropped(store: Store) -> None:
    key = store.key("cb", "t-open")
    assert _state(await _record(store, key, 0, 1)) == (1, b"closed", 0, 1, 2)  # 0 -> 1 failure: event 2
    assert _state(await _record(store, key, 0, 1)) == (1, b"closed", 0, 2, 0)
    opened = await _record(store, key, 0, 1)
    assert _state(opened) == (1, b"open", 1, 0, 1)
    assert 150 < opened[4] <= 200
    # Replicas that saw failures admitted under generation 0 report them late: nothing changes.
    for _ in range(5):
        assert _state(await _record(store, key, 0, 1)) == (0, b"open", 1, 0, 0)
    assert (await store.hgetall(key))[b"opened"] == b"1"


async def test_a_success_resets_the_failure_count(store: Store) -> None:
    key = store.key("cb", "t-reset")
    await _record(store, key, 0, 1)
    await _record(store, key, 0, 1)
    assert _state(await _record(store, key, 0, 0)) == (1, b"closed", 0, 0, 2)
    assert _state(await _record(store, key, 0, 0)) == (1, b"closed", 0, 0, 0)
    await _record(store, key, 0, 1)
    await _record(store, key, 0, 1)
    assert _state(await _record(store, key, 0, 0)) == (1, b"closed", 0, 0, 2)


async def test_probes_are_capped_and_successes_close(store: Store) -> None:
    key = store.key("cb", "t-probe")
    for _ in range(3):
        await _record(store, key, 0, 1)
    assert _state(await store.call("breaker_acquire", [key], [2, 5000]))[:2] == (0, b"open")
    await asyncio.sleep(0.25)
    assert _state(await store.call("breaker_acquire", [key], [2, 5000])) == (1, b"half_open", 2, 0, 1)
    assert _state(await store.call("breaker_acquire", [key], [2, 5000])) == (1, b"half_open", 2, 0, 0)
    assert _state(await store.call("breaker_acquire", [key], [2, 5000])) == (0, b"half_open", 2, 0, 0)
    assert _state(await _record(store, key, 2, 0, probe=1)) == (1, b"half_open", 2, 0, 0)
    # One slot is free again, and one success is not yet success_threshold.
    assert _state(await store.call("breaker_acquire", [key], [2, 5000]))[0] == 1
    assert _state(await _record(store, key, 2, 0, probe=1)) == (1, b"closed", 3, 0, 1)
    # The other probe reports after the circuit closed: dropped.
    assert _state(await _record(store, key, 2, 0, probe=1)) == (0, b"closed", 3, 0, 0)
    assert _state(await store.call("breaker_acquire", [key], [2, 5000])) == (1, b"closed", 3, 0, 0)


async def test_a_failed_probe_reopens(store: Store) -> None:
    key = store.key("cb", "t-reopen")
    for _ in range(3):
        await _record(store, key, 0, 1)
    await asyncio.sleep(0.25)
    assert _state(await store.call("breaker_acquire", [key], [1, 5000]))[:3] == (1, b"half_open", 2)
    reopened = await _record(store, key, 2, 1, probe=1)
    assert _state(reopened) == (1, b"open", 3, 0, 1) and reopened[4] > 150


async def test_abandoned_probe_slots_come_back_after_their_lease(store: Store) -> None:
    key = store.key("cb", "t-lease")
    for _ in range(3):
        await _record(store, key, 0, 1)
    await asyncio.sleep(0.25)
    assert (await store.call("breaker_acquire", [key], [1, 100]))[0] == 1
    assert (await store.call("breaker_acquire", [key], [1, 100]))[0] == 0
    await asyncio.sleep(0.15)
    assert (await store.call("breaker_acquire", [key], [1, 100]))[0] == 1


async def test_failure_rate_rule_over_the_window(store: Store) -> None:
    key = store.key("cb", "t-rate")
    config = [100, 2, 1000, 0.5, 60000, 10]  # consecutive rule out of reach; 50 % of at least 10 calls
    # 6 successes counted locally arrive as a batch with the first failure: 1 failed of 7.
    assert _state(await _record(store, key, 0, 1, batch=6, config=config))[1] == b"closed"
    for _ in range(4):  # 2/8, 3/9, 4/10, 5/11: below half
        assert _state(await _record(store, key, 0, 1, config=config))[1] == b"closed"
    assert _state(await _record(store, key, 0, 1, config=config))[1:3] == (b"open", 1)  # 6/12


async def test_rate_rule_waits_for_min_calls(store: Store) -> None:
    key = store.key("cb", "t-min")
    config = [100, 2, 1000, 0.5, 60000, 10]
    for _ in range(9):  # 100 % failures, but fewer than min_calls
        assert _state(await _record(store, key, 0, 1, config=config))[1] == b"closed"
    assert _state(await _record(store, key, 0, 1, config=config))[1] == b"open"


async def test_trip_opens_only_a_closed_breaker(store: Store) -> None:
    key = store.key("cb", "t-trip")
    tripped = await store.call("breaker_trip", [key], [500])
    assert _state(tripped) == (1, b"open", 1, 0, 1) and 400 < tripped[4] <= 500
    assert _state(await store.call("breaker_trip", [key], [500])) == (0, b"open", 1, 0, 0)
    assert _state(await store.call("breaker_state", [key], [])) == (1, b"open", 1, 0, 0)


async def test_state_of_an_unknown_breaker_is_closed(store: Store) -> None:
    assert await store.call("breaker_state", [store.key("cb", "nobody")], []) == [1, b"closed", 0, 0, 0, 0]
