"""The circuit breaker's scripts (``lua/breaker_*.lua``), spelt out here once: the breaker's hash,
the scripts' arguments, their one reply (a ``Snapshot``), and the fleet's transition messages.

Keys: one HASH per breaker, ``apigw:cb:{<name>}`` (``breaker_key``; ``breaker_tag`` keeps a name's
braces out of the hash tag). Its fields: ``state`` ("closed", "open", "half_open"; absent: closed),
``gen`` (one more per transition), ``failures`` (consecutive), ``successes`` (consecutive probes
that succeeded), ``probes`` (probe slots held), ``open_until`` and ``probe_until`` (microseconds,
the store's clock), ``opened`` (times opened), ``changed_at``, and ``w0``..``w9`` (the failure-rate
window's buckets, "index:calls:failures"). ``StoredBreaker`` reads it as a whole.

Every script takes KEYS = [the breaker's hash] and replies [flag, state, gen, failures,
open_left_ms, event] (``snapshot_reply``: a ``Snapshot``; event: ``Event``).
breaker_acquire (``acquire_call``)  ARGV max probes, lease ms (a probe that never reports holds its
    slot this long after the last grant); flag: granted (in HALF_OPEN a probe slot is now held: give
    it back through breaker_record with probe 1). Never called while closed.
breaker_record (``record_call``)  ARGV gen, outcome (``Outcome``), probe (0/1), ok batch (successes
    counted locally since the last write, for the rate window), failure threshold, success
    threshold, recovery ms, rate threshold (0 off, else a share in (0, 1]), window ms, min calls;
    flag: counted (an outcome of an older generation is not). Event FAILURES: the failure count left
    0 or went back to it (replicas skip writing successes at 0).
breaker_state (``state_call``)  no ARGV; flag 1, event NONE.
breaker_trip (``trip_call``)  ARGV open ms; opens a closed breaker (how a replica that opened it
    alone while the store was unreachable tells the fleet); flag: tripped.
breaker_force (``force_call``)  ARGV to ("open", "closed" or "reset": closed with the counts and
    the rate window cleared), open ms; flag 1. A new generation whatever it was.

Channel ``apigw:events:breaker``: a transition one replica's script made, as JSON {"n": name,
"s": state, "g": gen, "f": failures, "ms": open_left_ms, "r": the replica's id}
(``encode_event``, ``decode_event``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from app.breaker.model import CircuitState, Event, Outcome, Snapshot
from app.config import CircuitBreakerSpec
from app.store import ScriptCall, Store


def breaker_tag(name: str) -> str:
    # The hash tag is the text between the first { and the next }: a route's "{id}" must not end it.
    return name.replace("{", "(").replace("}", ")")


def breaker_key(store: Store, name: str) -> str:
    return store.key("cb", breaker_tag(name))


def acquire_call(key: str, max_probes: int, lease_ms: int) -> ScriptCall:
    return ScriptCall("breaker_acquire", (key,), (max_probes, lease_ms))


def record_call(key: str, gen: int, outcome: Outcome, probe: bool, ok_batch: int,
                config: CircuitBreakerSpec) -> ScriptCall:
    return ScriptCall("breaker_record", (key,), (
        gen, int(outcome), int(probe), ok_batch, config.failure_threshold, config.success_threshold,
        int(config.recovery_timeout * 1000), config.failure_rate_threshold or 0, config.window_seconds * 1000,
        config.min_calls))


def state_call(key: str) -> ScriptCall:
    return ScriptCall("breaker_state", (key,))


def trip_call(key: str, open_ms: int) -> ScriptCall:
    return ScriptCall("breaker_trip", (key,), (open_ms,))


def force_call(key: str, to: str, open_ms: int) -> ScriptCall:
    return ScriptCall("breaker_force", (key,), (to, open_ms))


def snapshot_reply(raw: list[Any]) -> Snapshot:
    flag, state, gen, failures, left, event = raw
    if isinstance(state, bytes):
        state = state.decode()
    return Snapshot(bool(int(flag)), CircuitState(state), int(gen), int(failures), int(left), Event(int(event)))


class StoredBreaker(NamedTuple):
    """A breaker's hash as it is (``app state``: read without a script)."""

    state: CircuitState
    gen: int
    failures: int
    opened: int
    open_until_us: int

    @classmethod
    def from_hash(cls, fields: Mapping[bytes, bytes]) -> StoredBreaker:
        def number(name: bytes) -> int:
            return int(float(fields.get(name, b"0")))

        return cls(CircuitState(fields.get(b"state", b"closed").decode()), number(b"gen"), number(b"failures"),
                   number(b"opened"), number(b"open_until"))


def local_hash(state: CircuitState, gen: int, failures: int, open_until_us: int) -> dict[bytes, bytes]:
    """The hash the scripts would have left for this state: what local state starts from."""
    return {b"state": state.value.encode(), b"gen": b"%d" % gen, b"failures": b"%d" % failures,
            b"open_until": b"%d" % open_until_us}


def encode_event(name: str, snap: Snapshot, replica_id: str) -> bytes:
    return orjson.dumps({"n": name, "s": snap.state.value, "g": snap.gen, "f": snap.failures,
                         "ms": snap.open_left_ms, "r": replica_id})


class BreakerEvent(NamedTuple):
    name: str
    replica_id: str | None
    snapshot: Snapshot


def decode_event(message: bytes) -> BreakerEvent:
    """Raises ValueError, KeyError or TypeError on a message that is not a breaker event."""
    event = orjson.loads(message)
    snap = Snapshot(True, CircuitState(event["s"]), int(event["g"]), int(event["f"]), int(event["ms"]),
                    Event.TRANSITION)
    return BreakerEvent(str(event["n"]), event.get("r"), snap)
