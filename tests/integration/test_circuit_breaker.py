"""The seed's circuit breaker as a library, on both stores, and several replicas' managers on one Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from app.circuit_breaker import (
    ApiCircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerManager,
    CircuitBreakerOpenError,
    CircuitState,
)
from app.store import Store
from app.store.redis import RedisStore
from tests.support import RedisProcess


class Backend:
    """A backend call that fails while ``failing`` is set, and counts what it receives."""

    def __init__(self) -> None:
        self.failing = False
        self.calls = 0

    async def __call__(self, params: dict[str, object]) -> dict[str, object]:
        self.calls += 1
        if self.failing:
            raise ConnectionError("backend down")
        return {"ok": True, **params}


async def test_seed_example(store: Store) -> None:
    backend_service_call = Backend()
    endpoint_params = {"q": 1}

    cb_manager = CircuitBreakerManager(store)
    config = CircuitBreakerConfig(failure_threshold=5, recovery_timeout=60, success_threshold=3)
    circuit_breaker = cb_manager.get_circuit_breaker("/api/v1/agents", config)
    for _ in range(98):
        result = await circuit_breaker.call(backend_service_call, endpoint_params)
    assert result == {"ok": True, "q": 1}
    backend_service_call.failing = True
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await circuit_breaker.call(backend_service_call, endpoint_params)
    stats = circuit_breaker.get_stats()
    assert {k: stats[k] for k in ("state", "failure_count", "success_count")} == \
        {"state": "closed", "failure_count": 2, "success_count": 98}

    for _ in range(3):
        with pytest.raises(ConnectionError):
            await circuit_breaker.call(backend_service_call, endpoint_params)
    assert circuit_breaker.state is CircuitState.OPEN
    try:
        result = await circuit_breaker.call(backend_service_call, endpoint_params)
    except CircuitBreakerOpenError:
        result = cb_manager.fallback_service.get_fallback("/api/v1/agents")
    assert result == {"error": "service unavailable", "endpoint": "/api/v1/agents"}
    assert backend_service_call.calls == 103  # the refused call never reached it
    assert cb_manager.get_circuit_breaker("/api/v1/agents") is circuit_breaker


async def test_half_open_probes_then_close(store: Store) -> None:
    backend = Backend()
    manager = CircuitBreakerManager(store)
    breaker = manager.get_circuit_breaker("svc", CircuitBreakerConfig(
        failure_threshold=2, recovery_timeout=0.2, success_threshold=2))
    backend.failing = True
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(backend, {})
    with pytest.raises(CircuitBreakerOpenError) as refused:
        await breaker.call(backend, {})
    assert refused.value.retry_after >= 1
    await asyncio.sleep(0.25)
    backend.failing = False
    await breaker.call(backend, {})
    assert breaker.state is CircuitState.HALF_OPEN
    await breaker.call(backend, {})
    assert breaker.state is CircuitState.CLOSED


async def test_a_failed_probe_reopens(store: Store) -> None:
    backend = Backend()
    breaker = CircuitBreakerManager(store).get_circuit_breaker("svc", CircuitBreakerConfig(
        failure_threshold=1, recovery_timeout=0.1, success_threshold=1))
    backend.failing = True
    with pytest.raises(ConnectionError):
        await breaker.call(backend, {})
    await asyncio.sleep(0.15)
    with pytest.raises(ConnectionError):
        await breaker.call(backend, {})
    assert breaker.state is CircuitState.OPEN
    assert backend.calls == 2


async def test_5xx_answers_fail_and_4xx_succeed(store: Store) -> None:
    breaker = CircuitBreakerManager(store).get_circuit_breaker("svc", CircuitBreakerConfig(failure_threshold=2))

    async def answer(status: int) -> tuple[dict[str, str], int]:
        return {}, status

    for _ in range(5):
        await breaker.call(answer, 404)
    assert breaker.state is CircuitState.CLOSED
    await breaker.call(answer, 503)
    await breaker.call(answer, 500)
    assert breaker.state is CircuitState.OPEN


async def test_slow_calls_count_as_failures(store: Store) -> None:
    breaker = CircuitBreakerManager(store).get_circuit_breaker("svc", CircuitBreakerConfig(
        failure_threshold=2, slow_call_seconds=0.05))

    async def slow() -> str:
        await asyncio.sleep(0.06)
        return "late"

    assert await breaker.call(slow) == "late"  # the caller still gets its answer
    assert await breaker.call(slow) == "late"
    assert breaker.state is CircuitState.OPEN
    assert breaker.get_stats()["slow_call_count"] == 2


async def test_successes_on_a_clean_circuit_are_not_written(store: Store) -> None:
    manager = CircuitBreakerManager(store)
    breaker = manager.get_circuit_breaker("quiet")
    ran: list[str] = []
    original = store.run

    async def counting(*calls):  # type: ignore[no-untyped-def]
        ran.extend(call.script for call in calls)
        return await original(*calls)

    store.run = counting  # type: ignore[method-assign]
    await breaker.call(lambda: "ok")
    assert ran == ["breaker_state"]  # a new breaker learns the fleet's state before its first call
    ran.clear()
    for _ in range(20):
        await breaker.call(lambda: "ok")
    assert ran == []
    with pytest.raises(ZeroDivisionError):
        await breaker.call(lambda: 1 / 0)
    await breaker.call(lambda: "ok")  # this one resets the count: written
    await breaker.call(lambda: "ok")  # and this one is not
    assert ran == ["breaker_record", "breaker_record"]


# -- several replicas on one Redis --------------------------------------------------------------


@pytest.fixture
async def fleet(redis_url: str, key_prefix: str, redis_client: object) -> AsyncIterator[list[CircuitBreakerManager]]:
    """Three managers on three connections to one Redis, as three replicas would have."""
    stores = [RedisStore(redis_url, prefix=key_prefix) for _ in range(3)]
    managers = [CircuitBreakerManager(s) for s in stores]
    for s, m in zip(stores, managers, strict=True):
        await s.start()
        await m.start()
    await asyncio.sleep(0.2)  # the event streams attach
    yield managers
    for s, m in zip(stores, managers, strict=True):
        await m.close()
        await s.close()


@pytest.mark.redis
async def test_concurrent_failures_open_once(fleet: list[CircuitBreakerManager], redis_client) -> None:  # type: ignore[no-untyped-def]
    config = CircuitBreakerConfig(failure_threshold=5, recovery_timeout=30)
    breakers = [m.get_circuit_breaker("storm", config) for m in fleet]

    async def fail() -> None:
        raise ConnectionError

    async def one(breaker: ApiCircuitBreaker) -> None:
        try:
            await breaker.call(fail)
        except (ConnectionError, CircuitBreakerOpenError):
            pass

    await asyncio.gather(*(one(breakers[i % 3]) for i in range(60)))
    state = redis_client.hgetall(breakers[0].key)
    assert state[b"state"] == b"open" and state[b"opened"] == b"1" and state[b"gen"] == b"1"
    await asyncio.sleep(0.1)
    assert all(b.state is CircuitState.OPEN for b in breakers)


@pytest.mark.redis
async def test_half_open_probes_are_counted_fleet_wide(fleet: list[CircuitBreakerManager]) -> None:
    config = CircuitBreakerConfig(failure_threshold=1, recovery_timeout=0.2, success_threshold=5,
                                  half_open_max_calls=2)
    breakers = [m.get_circuit_breaker("probe", config) for m in fleet]
    with pytest.raises(ConnectionError):
        await breakers[0].call(Backend.__call__, _failing_backend(), {})
    deadline = time.monotonic() + 5
    while not all(b.state is CircuitState.OPEN for b in breakers) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # every replica has heard of it (the event streams may attach late)
    await asyncio.sleep(0.25)
    reached = 0

    async def slow_ok() -> str:
        nonlocal reached
        reached += 1
        await asyncio.sleep(1.0)  # still in flight while all the others ask (a loaded machine is slow)
        return "ok"

    async def one(breaker: ApiCircuitBreaker) -> bool:
        try:
            await breaker.call(slow_ok)
            return True
        except CircuitBreakerOpenError:
            return False

    admitted = await asyncio.gather(*(one(breakers[i % 3]) for i in range(30)))
    assert reached == 2 and sum(admitted) == 2


def _failing_backend() -> Backend:
    backend = Backend()
    backend.failing = True
    return backend


@pytest.mark.redis
async def test_a_breaker_made_after_another_replica_opened_it_refuses_its_first_call(
        fleet: list[CircuitBreakerManager]) -> None:
    config = CircuitBreakerConfig(failure_threshold=1, recovery_timeout=30)
    with pytest.raises(ConnectionError):
        await fleet[0].get_circuit_breaker("late", config).call(Backend.__call__, _failing_backend(), {})
    assert "late" not in fleet[1].breakers  # it heard no event: the breaker did not exist there
    late = fleet[1].get_circuit_breaker("late", config)
    calls: list[str] = []
    with pytest.raises(CircuitBreakerOpenError):
        await late.call(lambda: calls.append("reached"))
    assert calls == [] and late.state is CircuitState.OPEN


@pytest.mark.redis
async def test_a_transition_reaches_the_other_replicas(fleet: list[CircuitBreakerManager], redis_client) -> None:  # type: ignore[no-untyped-def]
    config = CircuitBreakerConfig(failure_threshold=1, recovery_timeout=30)
    breakers = [m.get_circuit_breaker("news", config) for m in fleet]
    with pytest.raises(ConnectionError):
        await breakers[0].call(Backend.__call__, _failing_backend(), {})
    # When the script ran, by Redis's clock (this machine's too).
    opened_at = int(redis_client.hget(breakers[0].key, "changed_at")) / 1e6
    deadline = time.monotonic() + 1
    while not all(b.state is CircuitState.OPEN for b in breakers) and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    delays = [b.view.learned_at - opened_at for b in breakers[1:]]
    print(f"\ntransition seen by the other managers after {[f'{d * 1000:.2f} ms' for d in delays]}")
    assert all(b.state is CircuitState.OPEN for b in breakers)
    assert max(delays) < 0.1


@pytest.mark.redis
async def test_unreachable_redis_goes_local_then_reconciles(key_prefix: str) -> None:
    with RedisProcess() as server:
        stores = [RedisStore(server.url, prefix=key_prefix, retry_after_failure=0.1) for _ in range(2)]
        managers = [CircuitBreakerManager(s) for s in stores]
        for s, m in zip(stores, managers, strict=True):
            await s.start()
            await m.start()
        try:
            config = CircuitBreakerConfig(failure_threshold=2, recovery_timeout=30)
            a, b = (m.get_circuit_breaker("island", config) for m in managers)
            backend = _failing_backend()
            server.stop()
            for _ in range(2):  # no 500, no store error: the breaker decides alone
                with pytest.raises(ConnectionError):
                    await a.call(backend, {})
            assert a.state is CircuitState.OPEN and a.local_only
            with pytest.raises(CircuitBreakerOpenError):
                await a.call(backend, {})
            assert b.state is CircuitState.CLOSED  # b saw nothing
            server.start()  # an empty Redis on the same port
            deadline = time.monotonic() + 10
            while (a.local_only or b.state is not CircuitState.OPEN) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not a.local_only and a.state is CircuitState.OPEN
            assert b.state is CircuitState.OPEN  # a's trip was told to the fleet
        finally:
            for s, m in zip(stores, managers, strict=True):
                await m.close()
                await s.close()
