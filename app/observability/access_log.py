"""Structured access logs: one JSON line per request, written by a thread of its own.

The proxy records a request after its answer went out: the line is made there (orjson, a few
microseconds) and queued; the writer thread wakes every 50 ms and writes what was queued in one
call to stdout. Making the line on the event loop costs the same CPU as making it in the thread, but
a thread doing Python work takes the GIL from the loop for up to a switch interval (5 ms) at a time,
which showed in the gateway's p99 latency; a thread that only writes releases it. A writer that
cannot keep up (a blocked stdout) never slows requests: past ``max_queued`` lines, new ones are
dropped and counted, and the count is logged.

A line::

    {"time": "2026-11-26T08:30:00.123Z", "request_id": "…", "client": "ip:127.0.0.1", "method": "GET",
     "path": "/api/v1/agents", "received_path": "/api/v1/agents", "route": "agents", "status": 200, "duration_ms": 1.9,
     "backend_ms": 1.2, "overhead_ms": 0.7, "cache": "MISS",
     "rate_limit": {"limit": 60, "remaining": 59, "outcome": "allowed"}}
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from typing import Any, BinaryIO

import orjson

from app.pipeline.exchange import Exchange

log = logging.getLogger("apigw.access")

# How often the writer wakes to write what was queued (the delay a line may have).
FLUSH_SECONDS = 0.05
# Response headers a stage adds that say what the rate limit decided, as the log names them.
_LIMIT_HEADERS = ((b"ratelimit-limit", "limit"), (b"ratelimit-remaining", "remaining"), (b"retry-after", "retry_after"))
_second: list[Any] = [0, ""]  # the last whole second formatted


def _iso(wall: float) -> str:
    seconds = int(wall)
    if seconds != _second[0]:
        _second[0], _second[1] = seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{_second[1]}.{int((wall - seconds) * 1000):03d}Z"


def document(wall: float, ex: Exchange, status: int, seconds: float) -> dict[str, Any]:
    """The JSON line of one request."""
    route = ex.route
    backend = ex.backend_seconds
    line: dict[str, Any] = {
        "time": _iso(wall),
        "request_id": ex.request_id,
        "client": ex.client_id or f"ip:{ex.client_addr}",
        "method": ex.method,
        "path": ex.path,
        # As the client sent it: the normalised path above is what was routed and forwarded.
        "received_path": (ex.received_path or ex.raw_path).decode("latin-1"),
        "route": route.key if route is not None else None,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "backend_ms": round(backend * 1000, 3) if backend > 0 else None,
        "overhead_ms": round(max(0.0, seconds - backend) * 1000, 3),
        "cache": None,
    }
    limit: dict[str, Any] = {}
    if ex.response_headers:  # looked up by name: a scan of them all costs more than one dict
        added = dict(ex.response_headers)
        cache = added.get(b"x-cache")
        if cache is not None:
            line["cache"] = cache.decode("latin-1")
        for name, key in _LIMIT_HEADERS:
            value = added.get(name)
            if value is not None:
                limit[key] = int(value) if value.isdigit() else value.decode("latin-1")
    outcome = ex.ratelimit_outcome  # allowed, limited, degraded (store unreachable)
    if outcome is not None:
        limit["outcome"] = outcome
    line["rate_limit"] = limit or None
    if ex.log_fields:  # what a stage added for the log
        line.update(ex.log_fields)
    return line


class AccessLog:
    def __init__(self, stream: BinaryIO | None = None, max_queued: int = 100_000) -> None:
        self.stream = stream
        self.max_queued = max_queued
        self.dropped = 0
        # Appended by the event loop, taken by the writer; deque operations are atomic under the GIL.
        self._lines: collections.deque[bytes] = collections.deque()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._write_forever, name="apigw-access-log", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout=5)
            self._thread = None

    def record(self, ex: Exchange, status: int, seconds: float) -> None:
        """After the answer went out: make the line and queue it, no I/O."""
        if len(self._lines) < self.max_queued:
            self._lines.append(orjson.dumps(document(time.time(), ex, status, seconds), option=orjson.OPT_APPEND_NEWLINE))
        else:
            self.dropped += 1

    def _write_forever(self) -> None:
        # Woken by a clock, not by each line: a thread woken per request would take the GIL from
        # the event loop once per request; every FLUSH_SECONDS it takes it once for a whole batch.
        stream = self.stream or sys.stdout.buffer
        lines = self._lines
        reported = 0
        while True:
            stopping = self._stopping.wait(FLUSH_SECONDS)
            batch = [lines.popleft() for _ in range(len(lines))]
            if batch:
                try:
                    stream.write(b"".join(batch))
                    stream.flush()
                except Exception:  # a closed or broken stdout must not end the gateway
                    log.exception("access log: cannot write")
            if self.dropped != reported:
                log.warning("access log: %d line(s) dropped so far (the writer could not keep up)", self.dropped)
                reported = self.dropped
            if stopping:
                return
