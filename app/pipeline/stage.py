"""The extension points of the request pipeline, and the round-trip budget they share.

A component joins the pipeline as a ``Stage``. Before the backend, the orchestrator collects every
stage's ``admission_call`` and sends them to the store in one round trip (rate limit + cache lookup),
then asks each stage in order whether it ``admit``s the request: a stage ends the pipeline by
answering a ``Reply`` (429, a cache HIT, 503 for an open circuit). After the backend it collects
every ``completion_call`` (cache store, breaker outcome) into a second round trip, sent before the
client is answered unless every call in it says it may wait (``completion_order``: a cache store is
sent after the answer). A stage that has nothing to ask of the store returns None and costs nothing.

A stage that needs several calls in the same round trip (a route's circuit breakers, one per
target, each on its own Redis Cluster slot, reading the fleet's state before their first admission)
answers a ``CallGroup`` and receives the list of their replies.

A stage learns that the store is unreachable by receiving the ``StoreUnavailable`` as its reply,
and degrades by its own policy (fail open, bypass the cache, use local breaker state).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from app.pipeline.exchange import Exchange, Reply
from app.routing.router import Route
from app.store import ScriptCall


# When a stage's completion write must land, relative to the client's answer (``completion_order``).
BEFORE_ANSWER, EITHER, AFTER_ANSWER = 0, 1, 2


class CallGroup(tuple[ScriptCall, ...]):
    """Several calls that one stage sends in the batch; its reply is the list of theirs, each a
    reply or a ``StoreError``."""

    __slots__ = ()


class Stage:
    """Base class with do-nothing hooks; a stage overrides those it needs."""

    name = "stage"

    def applies_to(self, route: Route | None) -> bool:
        """Whether the stage has anything to do for requests on ``route`` (None: requests that
        matched no route). Asked once when a route is compiled, not per request: a stage that
        says no costs those requests nothing."""
        return True

    async def prepare(self, ex: Exchange, route: Route | None) -> Reply | None:
        """Before the admission round trip, what the stages' calls depend on: who the client is
        (authentication). May answer at once (a CORS preflight, a refused address), or leave
        ``ex.refusal`` for its ``admit`` to answer after the round trip has charged the rate limit."""
        return None

    def admission_call(self, ex: Exchange, route: Route | None) -> ScriptCall | CallGroup | None:
        """What the stage needs from the store before the backend (``route`` is None when no route
        matched: the rate limit still counts the request)."""
        return None

    async def admit(self, ex: Exchange, route: Route | None, store_reply: Any) -> Reply | None:
        """Decide with the store's reply to ``admission_call`` (or the ``StoreUnavailable``)."""
        return None

    def completion_call(self, ex: Exchange, route: Route, reply: Reply) -> ScriptCall | CallGroup | None:
        """What to write after the backend answered (or failed: ``reply`` is then the error)."""
        return None

    def completion_order(self, ex: Exchange, call: ScriptCall | CallGroup) -> int:
        """Whether ``call`` (this stage's ``completion_call``) must land before the client is
        answered (BEFORE_ANSWER), may land after (EITHER), or had better land after
        (AFTER_ANSWER: the answer does not depend on it, and its cost should not delay it). The
        batch goes out after the answer only when every call in it allows that and one prefers it,
        so it stays one round trip either way; ``completed`` then runs after the answer too."""
        return BEFORE_ANSWER

    async def completed(self, ex: Exchange, route: Route, reply: Reply, store_reply: Any) -> None:
        """The store's reply to ``completion_call``."""
        return None

    def stale_reply(self, ex: Exchange, route: Route) -> Reply | None:
        """A reply to serve instead of a backend failure (the cache's stale-if-error)."""
        return None

    def ended_early(self, ex: Exchange, route: Route | None, reply: Reply, store_reply: Any) -> None:
        """The request was answered before the backend by someone else (429, 503, 400): no
        ``completion_call`` will follow, so release what ``admission_call`` took (a fill lock).
        ``store_reply`` is the reply to this stage's ``admission_call`` (None when unknown); a
        stage after the one that answered never had ``admit`` called with it."""
        return None


def _overrides(stage: Stage, hook: str) -> bool:
    return getattr(type(stage), hook) is not getattr(Stage, hook)


@dataclass(frozen=True, slots=True)
class StagePlan:
    """The stages that apply to one route, sorted by the hooks each overrides, made when the route
    is compiled: a hook a stage leaves as the base class's costs that route's requests nothing."""

    preparing: tuple[Stage, ...] = ()  # prepare, in pipeline order
    asking: tuple[Stage, ...] = ()  # admission_call, in pipeline order
    # admit and ended_early, each with the index of the stage's reply among ``asking``'s (-1: none)
    deciding: tuple[tuple[Stage, int], ...] = ()
    ending: tuple[tuple[Stage, int], ...] = ()
    completing: tuple[Stage, ...] = ()  # completion_call (then completed)
    stale: tuple[Stage, ...] = ()  # stale_reply

    @classmethod
    def of(cls, stages: Iterable[Stage]) -> StagePlan:
        stages = tuple(stages)
        asking = tuple(stage for stage in stages if _overrides(stage, "admission_call"))

        def with_reply(hook: str) -> tuple[tuple[Stage, int], ...]:
            return tuple((stage, asking.index(stage) if stage in asking else -1)
                         for stage in stages if _overrides(stage, hook))

        return cls(preparing=tuple(stage for stage in stages if _overrides(stage, "prepare")),
                   asking=asking, deciding=with_reply("admit"), ending=with_reply("ended_early"),
                   completing=tuple(stage for stage in stages if _overrides(stage, "completion_call")),
                   stale=tuple(stage for stage in stages if _overrides(stage, "stale_reply")))

    def settled(self, stage: Stage) -> StagePlan:
        """This plan without ``stage``'s ``admission_call``: for a stage that asks the store only
        until it has learned something once per route (its breakers' first state read), so that the
        route's later requests pay nothing for it."""
        if stage not in self.asking:
            return self
        asking = tuple(s for s in self.asking if s is not stage)

        def reindexed(pairs: tuple[tuple[Stage, int], ...]) -> tuple[tuple[Stage, int], ...]:
            return tuple((s, asking.index(s) if s in asking else -1) for s, _ in pairs)

        return StagePlan(preparing=self.preparing, asking=asking, deciding=reindexed(self.deciding),
                         ending=reindexed(self.ending), completing=self.completing, stale=self.stale)

    @staticmethod
    def reply_of(replies: Sequence[Any] | None, index: int) -> Any:
        return replies[index] if replies is not None and index >= 0 else None
