"""The writes sent after their answers: those of one turn of the loop share one batch, and each
stage still gets its own call's reply."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from app.pipeline.after_answer import AfterAnswer
from app.pipeline.exchange import Exchange, Reply
from app.pipeline.stage import Stage
from app.store import ScriptCall, StoreUnavailable


class _Recording(Stage):
    def __init__(self, fail: bool = False) -> None:
        self.got: list[tuple[str, Any]] = []
        self.fail = fail

    async def completed(self, ex: Exchange, route: Any, reply: Reply, store_reply: Any) -> None:
        self.got.append((ex.path, store_reply))
        if self.fail:
            raise RuntimeError("a stage that breaks")


class _Route:
    key = "GET /r"


def _exchange(path: str) -> Exchange:
    return Exchange(method="GET", path=path, raw_path=path.encode(), query_string=b"", headers=[],
                    client_addr="127.0.0.1")


async def test_one_turns_writes_go_in_one_batch_and_each_stage_gets_its_reply() -> None:
    batches: list[list[ScriptCall | None]] = []
    tasks: list[asyncio.Task[None]] = []

    async def run_calls(calls: Sequence[ScriptCall | None]) -> list[Any]:
        batches.append(list(calls))
        return [None if call is None else (StoreUnavailable("down") if call.script == "bad" else call.args[0])
                for call in calls]

    after = AfterAnswer(lambda coro: tasks.append(asyncio.get_running_loop().create_task(coro)), run_calls)
    breaking, cache, breaker = _Recording(fail=True), _Recording(), _Recording()
    reply = Reply(200, [])
    after.add((_exchange("/a"), _Route(), reply, (breaking, cache), [ScriptCall("set", (), ("a1",)),
                                                                     ScriptCall("set", (), ("a2",))]))
    after.add((_exchange("/b"), _Route(), reply, (breaker, cache), [None, ScriptCall("bad", (), ("b",))]))
    assert len(tasks) == 1  # the second request's writes joined the first's
    await tasks[0]
    assert len(batches) == 1 and [c.script if c else None for c in batches[0]] == ["set", "set", None, "bad"]
    assert breaking.got == [("/a", "a1")]  # its failure stopped no other stage
    assert breaker.got == []  # it asked nothing
    assert cache.got[0] == ("/a", "a2")
    assert cache.got[1][0] == "/b" and isinstance(cache.got[1][1], StoreUnavailable)
    # A later turn's writes go in a batch of their own.
    after.add((_exchange("/c"), _Route(), reply, (cache,), [ScriptCall("set", (), ("c",))]))
    assert len(tasks) == 2
    await tasks[1]
    assert len(batches) == 2 and cache.got[-1] == ("/c", "c")


async def test_a_failed_batch_is_logged_and_the_next_turn_still_lands(caplog: pytest.LogCaptureFixture) -> None:
    tasks: list[asyncio.Task[None]] = []
    failing = True

    async def run_calls(calls: Sequence[ScriptCall | None]) -> list[Any]:
        if failing:
            raise RuntimeError("no store")
        return ["ok" for _ in calls]

    after = AfterAnswer(lambda coro: tasks.append(asyncio.get_running_loop().create_task(coro)), run_calls)
    stage = _Recording()
    after.add((_exchange("/a"), _Route(), Reply(200, []), (stage,), [ScriptCall("set", (), ())]))
    await tasks[0]
    assert "completion writes after the answer failed" in caplog.text and stage.got == []
    failing = False
    after.add((_exchange("/b"), _Route(), Reply(200, []), (stage,), [ScriptCall("set", (), ())]))
    await tasks[1]
    assert stage.got == [("/b", "ok")]
