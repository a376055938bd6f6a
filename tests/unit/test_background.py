"""Stopping background tasks always finishes, even when a task swallows a cancel."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from app.background import stop_tasks


async def _survives_one_cancel(ran: list[str]) -> None:
    """A loop like the store listeners: the first cancel comes out as an error it survives (what
    3.11's asyncio.timeout does to a cancel racing its expiry), so only a second cancel ends it."""
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                ran.append("stopped")
                raise
            swallowed = True
            asyncio.current_task().uncancel()  # type: ignore[union-attr]


async def test_a_task_that_swallows_a_cancel_is_cancelled_again_until_it_stops() -> None:
    ran: list[str] = []
    task = asyncio.create_task(_survives_one_cancel(ran))
    await asyncio.sleep(0.02)
    await stop_tasks([task])
    assert task.cancelled() and ran == ["stopped"]


async def test_a_task_that_never_stops_is_left_after_the_bound_and_named(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(stubborn(), name="stubborn-loop")
    await asyncio.sleep(0.02)  # inside its loop, where a cancel is swallowed
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="apigw"):
        await stop_tasks([task], timeout=0.3)
    assert time.monotonic() - started < 5  # the bound, with a wide margin: it did not wait forever
    assert not task.done() and "stubborn-loop" in caplog.text
    release.set()
    await task


async def test_none_entries_and_finished_tasks_are_fine() -> None:
    async def fails() -> None:
        raise RuntimeError("on its way out")

    done = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await stop_tasks([None, done])
    assert isinstance(done.exception(), RuntimeError)
