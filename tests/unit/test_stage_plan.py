"""StagePlan: which stages a route's requests run per hook, and a stage leaving the admission batch."""

from __future__ import annotations

from typing import Any

from app.pipeline.exchange import Exchange, Reply
from app.pipeline.stage import Stage, StagePlan
from app.routing.router import Route
from app.store import ScriptCall


class Asking(Stage):
    def admission_call(self, ex: Exchange, route: Route | None) -> ScriptCall | None:
        return ScriptCall(self.name, ("k",))


class Deciding(Asking):
    async def admit(self, ex: Exchange, route: Route | None, store_reply: Any) -> Reply | None:
        return None


class Ending(Asking):
    def ended_early(self, ex: Exchange, route: Route | None, reply: Reply, store_reply: Any) -> None:
        return None


class Quiet(Stage):
    async def admit(self, ex: Exchange, route: Route | None, store_reply: Any) -> Reply | None:
        return None


def test_each_hook_lists_the_stages_that_override_it_with_their_reply_index() -> None:
    ending, quiet, first, second = Ending(), Quiet(), Deciding(), Deciding()
    plan = StagePlan.of([ending, quiet, first, second])
    assert plan.asking == (ending, first, second)
    assert plan.deciding == ((quiet, -1), (first, 1), (second, 2))
    assert plan.ending == ((ending, 0),)


def test_a_settled_stage_leaves_the_batch_and_the_others_replies_are_reindexed() -> None:
    ending, first, second = Ending(), Deciding(), Deciding()
    plan = StagePlan.of([ending, first, second])
    settled = plan.settled(first)
    assert settled.asking == (ending, second)
    assert settled.deciding == ((first, -1), (second, 1))  # first still decides, with no reply
    assert settled.ending == ((ending, 0),)
    assert plan.asking == (ending, first, second)  # the plan a request in flight holds is unchanged
    assert settled.settled(first) is settled
