"""lua/auth_failure.lua and its twin, on both stores: the count, the growing cooling period, the
announcement, and the record's expiry."""

from __future__ import annotations

import asyncio

from app.auth.abuse.handler import Cooling
from app.auth.abuse.schema import AbuseSpec
from app.auth.abuse.storage import FailureLedger
from app.store import Store


async def _fail(store: Store, ledger: FailureLedger, address: str = "10.0.0.9") -> list[int]:
    reply = await store.run(ledger.failure_call(address))
    return [int(x) for x in reply[0]]


async def test_threshold_starts_a_cooling_period_that_doubles(store: Store) -> None:
    ledger = FailureLedger(store, AbuseSpec(threshold=3, window=10, cooldown=0.2, max_cooldown=0.5, memory=60))
    assert [(await _fail(store, ledger))[0] for _ in range(2)] == [0, 0]
    cooling, left, _, strikes = await _fail(store, ledger)
    assert cooling == 1 and 150 <= left <= 200 and strikes == 1
    refused = await _fail(store, ledger)  # while cooling: refused, not counted
    assert refused[0] == 1 and refused[1] <= left and refused[3] == 1
    await asyncio.sleep(0.25)
    assert [(await _fail(store, ledger))[0] for _ in range(2)] == [0, 0]
    cooling, left, _, strikes = await _fail(store, ledger)
    assert cooling == 1 and strikes == 2 and 350 <= left <= 400  # the second offence: twice as long
    await asyncio.sleep(0.45)
    for _ in range(2):
        await _fail(store, ledger)
    cooling, left, _, strikes = await _fail(store, ledger)
    assert strikes == 3 and 450 <= left <= 500  # capped at max_cooldown


async def test_failures_outside_the_window_start_over_and_addresses_are_apart(store: Store) -> None:
    ledger = FailureLedger(store, AbuseSpec(threshold=2, window=0.15, cooldown=1, memory=60))
    assert (await _fail(store, ledger))[:3] == [0, 0, 1]
    assert (await _fail(store, ledger, "10.0.0.10"))[:3] == [0, 0, 1]  # another address's count
    await asyncio.sleep(0.2)
    assert (await _fail(store, ledger))[:3] == [0, 0, 1]  # the window passed: counted afresh
    assert (await _fail(store, ledger))[0] == 1


async def test_offences_are_forgotten_after_memory_and_the_record_expires(store: Store) -> None:
    ledger = FailureLedger(store, AbuseSpec(threshold=1, window=0.1, cooldown=0.1, max_cooldown=10, memory=0.4))
    assert (await _fail(store, ledger))[3] == 1
    await asyncio.sleep(0.15)
    assert (await _fail(store, ledger))[3] == 2
    await asyncio.sleep(0.5)  # no offence for longer than memory: the record is gone
    assert not await store.hgetall(ledger.key("10.0.0.9"))
    cooling, left, _, strikes = await _fail(store, ledger)
    assert strikes == 1 and left <= 100


async def test_every_replica_hears_of_a_cooling_period(store: Store) -> None:
    spec = AbuseSpec(threshold=2, window=10, cooldown=5)
    cooling = Cooling(store, spec)
    cooling.start()
    await asyncio.sleep(0.1)  # the subscription is listening
    ledger = FailureLedger(store, spec)
    await _fail(store, ledger, "2001:db8::7")
    assert cooling.seconds_left("2001:db8::7") == 0
    await _fail(store, ledger, "2001:db8::7")
    for _ in range(50):
        if cooling.seconds_left("2001:db8::7"):
            break
        await asyncio.sleep(0.02)
    assert 4 < cooling.seconds_left("2001:db8::7") <= 5
    assert cooling.seconds_left("2001:db8::8") == 0
