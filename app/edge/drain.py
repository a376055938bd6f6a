"""A uvicorn server that drains on SIGTERM (and SIGINT): readiness first, then the listener.

The first signal turns the process's readiness false at once (``Lifecycle.drain``); the server
goes on accepting for ``server.drain_delay`` seconds, counted from the drain's start and so shared
by every listener of the process, then stops as uvicorn does: it closes the listening socket and
gives the requests in flight ``server.drain_timeout`` seconds (``timeout_graceful_shutdown``).
A second SIGINT forces the exit, as uvicorn's own does.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from types import FrameType

import uvicorn

from app.lifecycle import Lifecycle

# Seconds between closing the listener and closing the idle connections: a loop iteration or more.
_READ_WHAT_ARRIVED = 0.05


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_delay: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_delay = drain_delay
        self._signalled = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.lifecycle.drain()
        if self._signalled or self.drain_delay <= 0:
            super().handle_exit(sig, frame)
            return
        self._signalled = True
        self._captured_signals.append(sig)  # raised again once stopped, as uvicorn does

    async def on_tick(self, counter: int) -> bool:
        since = self.lifecycle.draining_since
        if self._signalled and since is not None and time.monotonic() >= since + self.drain_delay:
            self.should_exit = True
        return await super().on_tick(counter)


    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting, then let the loop read what already arrived before uvicorn closes the idle
        # keep-alive connections: a request a balancer sent on one just now is then served (with
        # Connection: close) rather than cut, which it could not retry were it a POST.
        for server in self.servers:
            server.close()
        await asyncio.sleep(_READ_WHAT_ARRIVED)
        await super().shutdown(sockets)


def exit_zero_on_sigterm() -> None:
    """After a drain the server raises SIGTERM again in the handler it found: make that handler end
    the process with status 0 (a finished drain is a clean exit), not die of the signal."""
    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
