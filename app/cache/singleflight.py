"""Single-flight fills: on a miss, one request of the fleet holds the key's fill lock and goes to
the backend; the others wait, bounded by ``lock_wait``, for the entry it stores.

A waiter is woken by the entry's id on the cache channel (the filler's store or release publishes
it when a lookup marked the lock: lua/cache_get.lua), or by this replica's own fill (``wake``), and
looks again at least every ``POLL`` seconds in case the message was missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from app.cache.protocol import WAIT, LookupReply
from app.store import Store

# Waiters look again at least this often, in case the fill message was missed.
POLL = 0.2


class FillWaiters:
    def __init__(self, store: Store, channel: str) -> None:
        self.store = store
        self.channel = channel
        self._events: dict[str, asyncio.Event] = {}

    def start(self) -> None:
        self.store.subscribe(self.channel, self._on_filled)

    def close(self) -> None:
        self.store.unsubscribe(self.channel, self._on_filled)

    def _on_filled(self, message: bytes) -> None:
        self.wake(message.decode("latin-1"))

    def wake(self, entry_id: str) -> None:
        """The entry was stored or its lock released: its waiters look again now."""
        event = self._events.pop(entry_id, None)
        if event is not None:
            event.set()

    async def wait(self, entry_id: str, lock_wait: float, look: Callable[[bool], Awaitable[LookupReply]]) -> LookupReply:
        """Look again (``look(final)``) each time the entry may have been filled, until the lookup
        answers something else than WAIT; past ``lock_wait``, one ``final`` look that neither waits
        nor takes the lock. Answers that lookup's reply."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lock_wait
        while True:
            remaining = deadline - loop.time()
            final = remaining <= 0
            if not final:
                event = self._events.get(entry_id)
                if event is None:
                    event = self._events[entry_id] = asyncio.Event()
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, POLL))
                except TimeoutError:
                    pass
            reply = await look(final)
            if reply.code != WAIT:
                return reply
