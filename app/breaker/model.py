"""A breaker's states and outcomes, and the view of it that a replica keeps in memory.

Redis holds the truth (one hash per breaker, changed only by ``lua/breaker_*.lua``); each replica
mirrors it in a ``View``, kept fresh by the scripts' replies and by the fleet's events. Every
transition bumps ``gen``, so a reply or event older than what a replica knows is recognised and
ignored, whatever order they arrive in.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class CircuitState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# The gauge's values (app.observability.metrics.CIRCUIT_STATE).
STATE_NUMBER = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class Outcome(enum.IntEnum):
    """What a call through the breaker came to (the scripts' ``outcome`` argument)."""

    SUCCESS = 0
    FAILURE = 1
    NONE = 2  # the call never reached the backend: only its probe slot is given back


class Event(enum.IntEnum):
    NONE = 0
    TRANSITION = 1
    FAILURES = 2  # the failure count left zero or went back to it


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A breaker's shared state as a script left it (its reply: app/breaker/protocol.py), or as a
    transition message told it; ``flag`` is the script's verdict (granted, counted, tripped)."""

    flag: bool
    state: CircuitState
    gen: int
    failures: int
    open_left_ms: int
    event: Event


@dataclass(slots=True)
class View:
    """What this replica believes about one breaker."""

    state: CircuitState = CircuitState.CLOSED
    gen: int = 0
    failures: int = 0
    # time.monotonic() after which an OPEN breaker may be probed.
    open_until: float = 0.0
    # time.time() when this replica learned of the current state (for the fleet's latency report).
    learned_at: float = field(default_factory=time.time)

    def open_left(self, now: float | None = None) -> float:
        if self.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self.open_until - (time.monotonic() if now is None else now))

    def adopt(self, snap: Snapshot, force: bool = False) -> bool:
        """Take ``snap`` if it is not older than what we know; True when the state changed."""
        if snap.gen < self.gen and not force:
            return False
        changed = snap.state is not self.state or snap.gen != self.gen
        if changed:
            self.learned_at = time.time()
        self.state = snap.state
        self.gen = snap.gen
        self.failures = snap.failures
        self.open_until = time.monotonic() + snap.open_left_ms / 1000 if snap.state is CircuitState.OPEN else 0.0
        return changed
