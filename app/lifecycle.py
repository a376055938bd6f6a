"""Where one gateway process is in its life: serving, or draining before it stops.

Readiness (app/control/admin/health.py) reads it; the listener (app/edge/drain.py) starts the
drain when SIGTERM arrives, before it stops accepting, so a load balancer sees the replica leave.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Lifecycle:
    __slots__ = ("config_version", "draining_since", "on_reloaded", "worker")

    def __init__(self) -> None:
        # time.monotonic() when the drain began; None while serving.
        self.draining_since: float | None = None
        # The worker's number under ``serve --workers`` (app/edge/workers.py); None: a single process.
        self.worker: int | None = None
        # The running config's number (app/reload.py): 1 at start, one more for each reload applied.
        self.config_version = 1
        # Under ``serve --workers``: tells the parent that this worker applied a reload the admin API
        # asked of it, so that the parent has every other worker read the file too.
        self.on_reloaded: Callable[[], None] | None = None

    @property
    def draining(self) -> bool:
        return self.draining_since is not None

    def drain(self) -> None:
        """Begin the drain (again: no change). Safe in a signal handler."""
        if self.draining_since is None:
            self.draining_since = time.monotonic()
