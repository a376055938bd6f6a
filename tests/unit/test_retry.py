"""Retry policy: which requests, how long to wait, and the budget."""

from __future__ import annotations

from app.config import RetrySpec
from app.pipeline.exchange import Reply
from app.pipeline.retry import BackendCall, RetryBudget, RetryPolicy, send_with_retries


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_is_a_share_of_requests_plus_a_floor() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.25, min_retries=1, window=10, clock=clock)
    assert budget.try_spend()  # the floor
    assert not budget.try_spend()
    for _ in range(8):
        budget.record_request()
    assert budget.try_spend()  # 2 retries of 8 requests
    assert not budget.try_spend()
    clock.now += 10.5  # the window moved on: only the floor again
    assert budget.try_spend() and not budget.try_spend()


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(RetrySpec(attempts=5, backoff_base=0.1, backoff_max=0.3), "r")
    for retry, ceiling in ((1, 0.1), (2, 0.2), (3, 0.3), (4, 0.3)):
        waits = [policy.backoff(retry) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # jittered over the whole range, not a constant


def test_only_idempotent_methods_with_a_replayable_body() -> None:
    policy = RetryPolicy(RetrySpec(attempts=1), "r")
    assert policy.applies("GET", None) and policy.applies("PUT", b"x")
    assert not policy.applies("POST", b"x")

    async def stream():  # type: ignore[no-untyped-def]
        yield b"x"

    assert not policy.applies("PUT", stream())
    assert policy.retryable(BackendCall(None, 0.1)) and policy.retryable(BackendCall(503, 0.1))
    assert not policy.retryable(BackendCall(500, 0.1)) and not policy.retryable(BackendCall(404, 0.1))


async def test_send_with_retries_stops_when_the_guard_says_so() -> None:
    policy = RetryPolicy(RetrySpec(attempts=3, backoff_base=0, budget_min_retries=10), "r")
    sent = 0

    async def attempt() -> tuple[Reply, BackendCall]:
        nonlocal sent
        sent += 1
        return Reply(503, []), BackendCall(503, 0.01)

    await send_with_retries(policy, "GET", None, attempt)
    assert sent == 4
    sent = 0
    await send_with_retries(policy, "GET", None, attempt, may_continue=lambda: sent < 2)
    assert sent == 2
    sent = 0
    await send_with_retries(None, "GET", None, attempt)
    assert sent == 1
