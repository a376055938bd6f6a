"""The access log's writer: lines written off the request path, flushed at close, bounded."""

from __future__ import annotations

import io
import json
import time

from app.observability.access_log import AccessLog, document
from app.pipeline.exchange import Exchange


def _exchange(request_id: str = "r1") -> Exchange:
    ex = Exchange(method="GET", path="/a", raw_path=b"/a", query_string=b"", headers=[], client_addr="10.0.0.1",
                  request_id=request_id)
    ex.response_headers = [(b"ratelimit-limit", b"60"), (b"ratelimit-remaining", b"59"), (b"x-cache", b"HIT")]
    ex.ratelimit_outcome = "allowed"
    ex.cache = object()
    ex.log_fields = {"tenant": "acme"}
    return ex


def test_a_line_says_who_what_and_how_it_went() -> None:
    line = document(1764145800.1234, _exchange(), 200, 0.0015)
    assert line == {"time": "2025-11-26T08:30:00.123Z", "request_id": "r1", "client": "ip:10.0.0.1", "method": "GET",
                    "path": "/a", "received_path": "/a", "route": None, "status": 200, "duration_ms": 1.5, "backend_ms": None,
                    "overhead_ms": 1.5, "cache": "HIT", "tenant": "acme",
                    "rate_limit": {"limit": 60, "remaining": 59, "outcome": "allowed"}}


def test_lines_are_written_by_the_thread_and_flushed_at_close() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream)
    log.start()
    for i in range(1000):
        log.record(_exchange(f"r{i}"), 200, 0.001)
    started = time.monotonic()
    while stream.getvalue().count(b"\n") < 1000 and time.monotonic() - started < 2:
        time.sleep(0.01)
    log.record(_exchange("last"), 503, 0.001)
    log.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == [f"r{i}" for i in range(1000)] + ["last"]


def test_a_writer_that_cannot_keep_up_drops_lines_instead_of_growing() -> None:
    log = AccessLog(io.BytesIO(), max_queued=10)  # not started: nothing drains the queue
    for _ in range(25):
        log.record(_exchange(), 200, 0.001)
    assert log.dropped == 15
