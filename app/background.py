"""Stopping the gateway's background tasks, boundedly.

A plain ``task.cancel(); await task`` can wait forever: on Python 3.11, a cancel that lands while
``asyncio.timeout`` (inside redis-py, aiohttp) is expiring comes out as ``TimeoutError``, and a loop
that survives store errors then goes on as if never cancelled. So the cancel is sent again until
the task ends, and the wait has a bound: a shutdown always finishes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("apigw")

RECANCEL_EVERY = 0.1


async def stop_tasks(tasks: Iterable[asyncio.Task[Any] | None], timeout: float = 3.0) -> None:
    """Cancel ``tasks`` (``None`` entries are skipped) and wait for them, at most ``timeout`` s."""
    stopping = [task for task in tasks if task is not None]
    pending = set(stopping)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            log.warning("shutdown: %d background task(s) did not stop: %s", len(pending),
                        ", ".join(sorted(task.get_name() for task in pending)))
            return
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY, left))
    for task in stopping:  # marked retrieved: what a task raised on its way out is not news now
        if not task.cancelled():
            task.exception()
