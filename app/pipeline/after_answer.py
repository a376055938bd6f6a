"""Completion writes sent after their answers (``Stage.completion_order``), landed together.

A stored miss's store goes out after its answer. Rather than a task and a batch per request, the
writes of every request answered in the same turn of the event loop wait in one queue, and one
task sends them all in a single batch (one round trip for all of them), then hands each stage its
reply. Each call still gets its own reply or ``StoreError``: the batch only shares the trip.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from app.pipeline.exchange import Exchange, Reply
from app.pipeline.stage import Stage
from app.routing.router import Route
from app.store import ScriptCall

log = logging.getLogger("apigw.pipeline")

# One request's writes: what its stages' ``completed`` need, and its calls (None: the stage asked nothing).
Landing = tuple[Exchange, Route[Any], Reply, tuple[Stage, ...], list[ScriptCall | None]]
RunCalls = Callable[[Sequence[ScriptCall | None]], Awaitable[list[Any]]]


class AfterAnswer:
    def __init__(self, spawn: Callable[[Coroutine[Any, Any, None]], None], run_calls: RunCalls) -> None:
        """``spawn`` runs the landing task off the request's path (tracked, cancelled on close);
        ``run_calls`` sends calls in one round trip, answering each one's reply or StoreError."""
        self._spawn = spawn
        self._run_calls = run_calls
        self._queued: list[Landing] = []

    def add(self, landing: Landing) -> None:
        """Queue one request's writes; the first of a turn starts the task that sends the turn's."""
        queued = self._queued
        queued.append(landing)
        if len(queued) == 1:
            # The task's first step runs once this turn's callbacks are done: it takes them all.
            self._spawn(self._land())

    async def _land(self) -> None:
        landings, self._queued = self._queued, []
        try:
            if len(landings) == 1:
                replies = await self._run_calls(landings[0][4])
            else:
                replies = await self._run_calls([call for landing in landings for call in landing[4]])
        except Exception:  # nobody awaits this task: its failure is logged, not lost
            log.exception("completion writes after the answer failed for %d request(s)", len(landings))
            return
        at = 0
        for ex, route, reply, stages, calls in landings:
            for stage, call in zip(stages, calls, strict=True):
                if call is not None:
                    try:
                        await stage.completed(ex, route, reply, replies[at])
                    except Exception:
                        log.exception("completion writes after the answer failed for %s", route.key)
                at += 1
