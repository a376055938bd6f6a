"""One circuit breaker: admission, outcomes, and the store calls that make its transitions.

The happy path never touches the store: a CLOSED breaker admits from memory, and a success is
written only when it would change something (a failure count to reset, a probe to report). Failures
go to ``lua/breaker_record.lua``; probes of an OPEN breaker past its recovery time, or of a
HALF_OPEN one, are reserved by ``lua/breaker_acquire.lua``. Each script is one atomic transition in
Redis, so however many replicas report at once, the breaker opens once and the probes are counted
for the whole fleet.

When the store is unreachable, the breaker runs the same scripts' Python twins on a private
``MemoryDB`` (local state), and reconciles when the store is back (``reconcile``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.config import CircuitBreakerSpec
from app.observability.metrics import CIRCUIT_STATE, CIRCUIT_TRANSITIONS
from app.breaker.model import STATE_NUMBER, CircuitState, Event, Outcome, Snapshot, View
from app.breaker.protocol import (acquire_call, breaker_key, force_call, local_hash, record_call, snapshot_reply,
                                  state_call, trip_call)
from app.store import MemoryDB, ScriptCall, Store, StoreUnavailable
from app.store.scripts import breaker_acquire, breaker_record, breaker_state, breaker_trip

log = logging.getLogger("apigw.breaker")

_TWINS = {"breaker_acquire": breaker_acquire, "breaker_record": breaker_record,
          "breaker_state": breaker_state, "breaker_trip": breaker_trip}


class CircuitBreakerOpenError(Exception):
    """The circuit refuses the call: it is OPEN, or HALF_OPEN with every probe slot taken."""

    def __init__(self, name: str, state: CircuitState, retry_after: float) -> None:
        super().__init__(f"circuit {name!r} is {state.value}; retry after {retry_after:.1f}s")
        self.name = name
        self.state = state
        self.retry_after = retry_after


@dataclass(slots=True)
class CircuitBreakerStats:
    """Calls through this breaker on this replica (the state itself is the fleet's)."""

    total_calls: int = 0
    success_count: int = 0
    failure_count: int = 0
    slow_call_count: int = 0
    rejected_count: int = 0
    state_changes: int = 0
    last_failure_time: float | None = None
    last_state_change: float | None = None


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted call: the generation it was admitted under, and whether it holds a probe slot."""

    gen: int
    probe: bool = False


def default_is_failure(result: Any) -> bool:
    """A returned value fails when it is an HTTP answer with a 5xx status (docs/design.md); 4xx succeed."""
    status = getattr(result, "status_code", None)
    if status is None:
        status = getattr(result, "status", None)
    if status is None and isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], int):
        status = result[1]  # the seed's (body, status)
    return isinstance(status, int) and status >= 500


# How a breaker tells the fleet of a transition its script made (CircuitBreakerManager.announce).
Announce = Callable[["ApiCircuitBreaker", Snapshot], Awaitable[None]]


class ApiCircuitBreaker:
    PROBE_LEASE = 60.0  # seconds; for call(), which cannot know how long ``func`` may take

    def __init__(self, name: str, config: CircuitBreakerSpec, store: Store,
                 announce: Announce | None = None,
                 is_failure: Callable[[Any], bool] = default_is_failure) -> None:
        self.name = name
        self.config = config
        self.store = store
        # Tells the fleet of a transition this replica's script made (the manager's announce);
        # None: a breaker on its own, which tells no one.
        self.announce = announce
        self.is_failure = is_failure
        self.key = breaker_key(store, name)
        self.view = View()
        self.stats = CircuitBreakerStats()
        # Successes not written yet; only the rate rule needs them (flushed with the next write).
        self.pending_successes = 0
        # Set while the store is unreachable: the scripts' twins run here instead.
        self._local: MemoryDB | None = None
        # Whether this breaker has learned the fleet's state (a read, a script's reply, an event):
        # until then its CLOSED is a default, not knowledge, and it must not admit on it.
        self.known = False
        # The ticket of every call admitted while CLOSED in the current generation (immutable, so
        # one serves them all), and admits_locally bound once (the pipeline hands it to retries).
        self._closed_ticket = Ticket(0)
        self.retry_guard = self.admits_locally
        CIRCUIT_STATE.labels(name).set(0)

    # -- what callers see -----------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        return self.view.state

    @property
    def local_only(self) -> bool:
        """True while the store is unreachable and this breaker decides alone."""
        return self._local is not None

    def retry_after(self) -> float:
        return max(1.0, math.ceil(self.view.open_left()))

    def get_stats(self) -> dict[str, Any]:
        s = self.stats
        return {
            "state": self.view.state.value, "failure_count": s.failure_count, "success_count": s.success_count,
            "slow_call_count": s.slow_call_count, "rejected_count": s.rejected_count,
            "total_calls": s.total_calls, "state_changes": s.state_changes,
            "consecutive_failures": self.view.failures, "generation": self.view.gen,
            "open_seconds_left": round(self.view.open_left(), 3), "local_only": self.local_only,
            # Wall-clock time at which this replica learned of the current state.
            "state_since": self.view.learned_at,
        }

    async def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``func`` (sync or async) through the breaker; raises CircuitBreakerOpenError when
        the circuit refuses. An exception, or a 5xx answer, counts as a failure."""
        # A probe whose caller vanished holds its slot this long: longer than any call should take
        # (the pipeline uses the route's timeouts instead), so a slow probe is never doubled.
        ticket = await self.admit(lease=max(self.PROBE_LEASE, self.config.recovery_timeout))
        started = time.monotonic()
        try:
            result = func(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except asyncio.CancelledError:
            await self.record(ticket, Outcome.NONE)
            raise
        except Exception:
            await self.record(ticket, Outcome.FAILURE, time.monotonic() - started)
            raise
        outcome = Outcome.FAILURE if self.is_failure(result) else Outcome.SUCCESS
        await self.record(ticket, outcome, time.monotonic() - started)
        return result

    # -- admission ------------------------------------------------------------------------------

    def admits_locally(self) -> bool:
        """Whether a call could be admitted (without reserving anything): for target selection."""
        return self.view.state is not CircuitState.OPEN or self.view.open_left() <= 0

    def admit_closed(self) -> Ticket | None:
        """A CLOSED circuit's admission, from memory and without awaiting; None when it is not
        CLOSED (``admit`` decides then)."""
        view = self.view
        if view.state is not CircuitState.CLOSED:
            return None
        self.stats.total_calls += 1
        ticket = self._closed_ticket
        if ticket.gen != view.gen:
            ticket = self._closed_ticket = Ticket(view.gen)
        return ticket

    async def admit(self, lease: float = 30.0) -> Ticket:
        """Admit a call or raise CircuitBreakerOpenError. CLOSED answers from memory; otherwise one
        script call reserves a probe (``lease``: seconds the slot is held if never reported). A
        breaker that has not learned the fleet's state yet reads it first (the pipeline reads it in
        its admission batch instead)."""
        if not self.known:
            await self.read_state()
        ticket = self.admit_closed()
        if ticket is not None:
            return ticket
        view = self.view
        if view.state is CircuitState.OPEN and view.open_left() > 0:
            self.stats.rejected_count += 1
            raise CircuitBreakerOpenError(self.name, view.state, self.retry_after())
        snap = await self._run(acquire_call(self.key, self.config.half_open_max_calls, int(lease * 1000)))
        if not snap.flag:
            self.stats.rejected_count += 1
            retry = max(1.0, math.ceil(snap.open_left_ms / 1000)) if snap.state is CircuitState.OPEN else 1.0
            raise CircuitBreakerOpenError(self.name, snap.state, retry)
        self.stats.total_calls += 1
        return Ticket(snap.gen, probe=snap.state is CircuitState.HALF_OPEN)

    # -- outcomes -------------------------------------------------------------------------------

    def outcome_call(self, ticket: Ticket, outcome: Outcome, seconds: float | None = None) -> ScriptCall | None:
        """The store write this outcome needs, or None when it would change nothing. Counts the call
        in this replica's stats; pass the reply (or StoreUnavailable) to ``outcome_reply``."""
        stats = self.stats
        view = self.view
        if outcome is Outcome.SUCCESS:
            slow = self.config.slow_call_seconds
            if slow is not None and seconds is not None and seconds >= slow:
                stats.slow_call_count += 1
                outcome = Outcome.FAILURE
            else:
                stats.success_count += 1
                if ticket.gen == view.gen and not ticket.probe and view.failures == 0 \
                        and view.state is CircuitState.CLOSED:
                    # The common case: a success that changes nothing but what the rate rule counts.
                    if self.config.failure_rate_threshold is not None:
                        self.pending_successes += 1
                    return None
        if outcome is Outcome.FAILURE:
            stats.failure_count += 1
            stats.last_failure_time = time.time()
        elif outcome is Outcome.NONE and not ticket.probe:
            return None
        if ticket.gen != view.gen:
            return None  # admitted before a transition we already know of: the script would drop it
        batch = 0
        if outcome is Outcome.FAILURE and self.config.failure_rate_threshold is not None:
            batch, self.pending_successes = self.pending_successes, 0
        return record_call(self.key, ticket.gen, outcome, ticket.probe, batch, self.config)

    async def outcome_reply(self, call: ScriptCall, reply: Any) -> None:
        """Learn from the store's reply to ``outcome_call``; a StoreUnavailable (or being in local
        mode) decides on local state instead."""
        if isinstance(reply, BaseException):
            self._run_local(call)
            return
        await self._learned(snapshot_reply(reply))

    async def record(self, ticket: Ticket, outcome: Outcome, seconds: float | None = None) -> None:
        """``outcome_call`` and its reply in one go (the library path; the pipeline batches them)."""
        call = self.outcome_call(ticket, outcome, seconds)
        if call is None:
            return
        try:
            reply = (await self.store.run(call))[0]
        except StoreUnavailable as error:
            reply = error
        await self.outcome_reply(call, reply)

    def flush_call(self) -> ScriptCall | None:
        """The successes the rate rule still needs to count, as a write that changes nothing else."""
        if not self.pending_successes or self._local is not None:
            return None
        batch, self.pending_successes = self.pending_successes, 0
        return record_call(self.key, self.view.gen, Outcome.NONE, False, batch, self.config)

    # -- the store, or local state when it is unreachable ----------------------------------------

    async def _run(self, call: ScriptCall) -> Snapshot:
        try:
            reply = (await self.store.run(call))[0]
        except StoreUnavailable:
            return self._run_local(call)
        snap = snapshot_reply(reply)
        await self._learned(snap)
        return snap

    def _run_local(self, call: ScriptCall) -> Snapshot:
        if self._local is None:
            self._local = self._seed_local()
            log.warning("circuit %s: store unreachable, deciding on local state", self.name)
        snap = snapshot_reply(_TWINS[call.script].run(self._local, list(call.keys), list(call.args)))
        self._adopt(snap)
        return snap

    def _seed_local(self) -> MemoryDB:
        """Start local state from what we knew of the fleet's."""
        db = MemoryDB()
        view = self.view
        open_until = db.now_us() + int(view.open_left() * 1_000_000) if view.state is CircuitState.OPEN else 0
        db.set(self.key, local_hash(view.state, view.gen, view.failures, open_until))
        return db

    async def _learned(self, snap: Snapshot) -> None:
        """A reply from the shared store: adopt it, and tell the fleet when it was a transition."""
        if self._local is not None:
            await self.reconcile()
            return
        self._adopt(snap)
        if snap.event is not Event.NONE and self.announce is not None:
            await self.announce(self, snap)

    def _adopt(self, snap: Snapshot, force: bool = False) -> None:
        self.known = True
        before = self.view.state
        if self.view.adopt(snap, force=force):
            self._changed(before)

    def _changed(self, before: CircuitState) -> None:
        state = self.view.state
        self.stats.state_changes += 1
        self.stats.last_state_change = time.time()
        CIRCUIT_STATE.labels(self.name).set(STATE_NUMBER[state])
        if state is not before:
            CIRCUIT_TRANSITIONS.labels(self.name, state.value).inc()
            level = logging.WARNING if state is CircuitState.OPEN else logging.INFO
            log.log(level, "circuit %s: %s -> %s (generation %d)", self.name, before.value, state.value,
                    self.view.gen)

    def learn_event(self, snap: Snapshot) -> None:
        """Another replica's transition, from the fleet's events."""
        if self._local is None:
            self._adopt(snap)

    def state_call(self) -> ScriptCall:
        return state_call(self.key)

    def learn_state(self, reply: Any, force: bool) -> None:
        """A re-read of the shared state (``force``: after a reconnect, Redis may have restarted)."""
        self._adopt(snapshot_reply(reply), force=force)

    async def read_state(self) -> None:
        """Learn the fleet's state now (one round trip); an unreachable store leaves it unknown."""
        try:
            reply = (await self.store.run(self.state_call()))[0]
        except StoreUnavailable:
            return
        if self._local is None:
            self.learn_state(reply, force=False)

    async def force(self, to: str, seconds: float | None = None) -> Snapshot:
        """Move the circuit by hand for the whole fleet: "open" (for ``seconds``, default the
        recovery timeout; then HALF_OPEN as usual), "closed", or "reset" (closed, counts cleared).
        Raises StoreUnavailable when the fleet cannot be told (a hand move is never local only)."""
        open_ms = int((self.config.recovery_timeout if seconds is None else seconds) * 1000)
        snap = snapshot_reply((await self.store.run(force_call(self.key, to, open_ms)))[0])
        self._local = None
        self._adopt(snap, force=True)
        if self.announce is not None:
            await self.announce(self, snap)
        return snap

    async def reconcile(self) -> None:
        """The store is reachable again: a circuit that this replica opened alone is opened for the
        fleet (if the fleet's is closed), then the shared state is taken as it is."""
        view = self.view
        try:
            if self._local is not None and view.state is CircuitState.OPEN and view.open_left() > 0:
                trip = snapshot_reply((await self.store.run(trip_call(self.key, int(view.open_left() * 1000))))[0])
                if trip.event is not Event.NONE and self.announce is not None:
                    self._local = None
                    self._adopt(trip, force=True)
                    await self.announce(self, trip)
                    return
            reply = (await self.store.run(state_call(self.key)))[0]
        except StoreUnavailable:
            return
        if self._local is not None:
            log.info("circuit %s: store reachable again, back on the fleet's state", self.name)
        self._local = None
        self.learn_state(reply, force=True)
