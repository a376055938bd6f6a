"""The failed-authentication ledger in the store (``lua/auth_failure.lua``): its key, its
arguments, its reply, and the message that announces a cooling period. Nothing else spells them."""

from __future__ import annotations

from typing import NamedTuple

from app.auth.abuse.schema import AbuseSpec
from app.store import ScriptCall, Store

SCRIPT = "auth_failure"


class FailureCount(NamedTuple):
    cooling: bool            # the address is refused now (this failure started it, or one earlier)
    retry_after_ms: int      # how long it still is
    failures: int            # failures counted in the current window
    strikes: int             # offences remembered, this one included


class FailureLedger:
    def __init__(self, store: Store, spec: AbuseSpec) -> None:
        self.store = store
        self.channel = store.channel("auth-cooling")
        self._args = (spec.threshold, round(spec.window * 1000), round(spec.cooldown * 1000),
                      round(spec.max_cooldown * 1000), round(spec.memory * 1000), self.channel)

    def key(self, address: str) -> str:
        # One hash tag per address: on Redis Cluster the records spread over the shards.
        return self.store.key("authfail", address)

    def failure_call(self, address: str) -> ScriptCall:
        return ScriptCall(SCRIPT, (self.key(address),), (*self._args, address))

    @staticmethod
    def decode(reply: list[int]) -> FailureCount:
        return FailureCount(bool(reply[0]), int(reply[1]), int(reply[2]), int(reply[3]))

    @staticmethod
    def parse_message(message: bytes) -> tuple[str, int] | None:
        """``(address, cooling ms)`` from a message on ``channel``; None when it is not one."""
        address, _, left = message.decode("latin-1").rpartition(" ")
        try:
            return (address, int(left)) if address else None
        except ValueError:
            return None
