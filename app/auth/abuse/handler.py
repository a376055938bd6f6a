"""Progressive refusal of addresses that keep failing to authenticate.

Each failure is counted in the store (``FailureLedger``), in the admission round trip the request
makes anyway. An address past the threshold cools off: 429 for ``cooldown`` seconds, doubled with
each repeated offence. Every replica learns of a cooling period from the store's message and
refuses the address from memory, valid credentials or not, so a guesser learns nothing while it
lasts. A replica that missed the message (its subscription broke) learns the period from the
address's next failure, whose count the store answers with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from app.auth.abuse.schema import AbuseSpec
from app.auth.abuse.storage import FailureCount, FailureLedger
from app.store import ScriptCall, Store

_MAX_COOLING = 100_000


class Cooling:
    def __init__(self, store: Store, spec: AbuseSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger = FailureLedger(store, spec)
        self.store = store
        self.clock = clock
        # address -> when its cooling period ends (this replica's monotonic clock)
        self._until: dict[str, float] = {}

    def start(self) -> None:
        self.store.subscribe(self.ledger.channel, self._on_message)

    def close(self) -> None:
        self.store.unsubscribe(self.ledger.channel, self._on_message)

    def _on_message(self, message: bytes) -> None:
        parsed = self.ledger.parse_message(message)
        if parsed is not None:
            self.cool(*parsed)

    def cool(self, address: str, ms: int) -> None:
        if len(self._until) >= _MAX_COOLING:
            now = self.clock()
            self._until = {a: t for a, t in self._until.items() if t > now}
        self._until[address] = max(self._until.get(address, 0.0), self.clock() + ms / 1000)

    def seconds_left(self, address: str) -> float:
        """How long ``address`` is still refused (0: it is not)."""
        until = self._until.get(address)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._until[address]
            return 0.0
        return left

    def failure_call(self, address: str) -> ScriptCall:
        return self.ledger.failure_call(address)

    def counted(self, address: str, reply: list[int]) -> FailureCount:
        """The store's count of a failure; a cooling period it reports is kept here too."""
        count = self.ledger.decode(reply)
        if count.cooling and count.retry_after_ms > 0:
            self.cool(address, count.retry_after_ms)
        return count
