"""Load generators: wrk for throughput (closed loop), and a paced open-loop client for added latency.

wrk runs with one thread (on 2 cores it must not starve what it measures) and a Lua ``done`` hook
that prints its exact counts and percentiles as one JSON line, so nothing is parsed from its text.
For the cache-miss configuration the Lua script gives every request its own query string.

The open-loop client (wrk2 is not in Debian; a few lines of asyncio on raw keep-alive connections,
so that its own CPU stays small beside what it measures) starts request i at ``start + i / rate`` whatever the
answers do, each on its own task, so a slow answer shows in the percentiles instead of quietly
lowering the rate (coordinated omission). Latency runs from the instant the request's task starts
(the event loop's timer granularity would otherwise add up to a millisecond of schedule jitter to
every figure); how far the generator itself fell behind its schedule is reported beside it. Its own
overhead is in every figure alike, and the report subtracts the direct backend's percentiles from the
gateway's, measured by the same client in the same run.
"""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_MARK = "WRKJSON "

_DONE_HOOK = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_err":%d,"read_err":%d,"write_err":%d,' ..
    '"status_err":%d,"timeout_err":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""

# Every request its own URL, so every request is a cache miss that stores a new entry. The run's
# nonce comes as the script's argument, so that a later run never hits an earlier run's entries.
_UNIQUE_PATHS = r"""
local counter = 0
local nonce = "x"
local path = "%s"
function init(args)
  nonce = args[1] or "x"
end
function request()
  counter = counter + 1
  return wrk.format(nil, path .. "?n=" .. nonce .. "-" .. counter)
end
"""

# Every request from one of N clients in turn (X-Client-ID), so a per-client limiter keeps N keys,
# as it would in front of many callers; the run's other headers (-H) are kept.
_ROTATING_CLIENTS = r"""
local counter = 0
local clients = %d
function request()
  counter = counter + 1
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["X-Client-ID"] = "client-" .. (counter %% clients)
  return wrk.format(nil, nil, headers)
end
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: int  # connect, read, write, timeout
    bad_status: int  # answers other than 2xx/3xx
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(url: str, duration: float, connections: int, unique_paths: bool = False,
            path: str = "/", headers: dict[str, str] | None = None, clients: int = 0) -> WrkResult:
    """``clients``: when above 0, each request carries X-Client-ID of one of that many clients in turn."""
    exe = wrk_path()
    if exe is None:
        raise RuntimeError("wrk is not installed: run tests/perf/setup.sh (apt-get install nginx-light wrk)")
    if unique_paths and clients:
        raise ValueError("unique paths and rotating clients are not combined")
    script = _DONE_HOOK + (_UNIQUE_PATHS % path if unique_paths else "") + (
        _ROTATING_CLIENTS % clients if clients else "")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        cmd = [exe, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "5s",
               "--latency", "-s", handle.name,
               *(arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")),
               url + path, "--", uuid.uuid4().hex[:12]]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=False)
    finally:
        Path(handle.name).unlink(missing_ok=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(_MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    raw = json.loads(line[len(_MARK):])
    return WrkResult(
        requests=raw["requests"], seconds=raw["duration_us"] / 1e6,
        errors=raw["connect_err"] + raw["read_err"] + raw["write_err"] + raw["timeout_err"],
        bad_status=raw["status_err"], p50_ms=raw["p50_us"] / 1000, p99_ms=raw["p99_us"] / 1000)


@dataclass
class OpenLoopResult:
    rate: float
    sent: int
    ok: int
    failed: int
    late_start_ms: float  # how far behind schedule the generator itself fell, at its worst
    p50_ms: float
    p99_ms: float


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends a request and waits for its whole answer.

    Deliberately minimal (Content-Length or chunked answers, nothing else), so that the generator's
    own CPU per request stays far below the gateway's on the same two cores: a full HTTP client here
    would compete with what it measures."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        status = self._complete()
        if status is not None and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def _complete(self) -> int | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).lower()
        body_start = end + 4
        marker = head.find(b"content-length:")
        if marker >= 0:
            length = int(head[marker + 15:].split(b"\r\n", 1)[0])
            if len(self.buffer) - body_start < length:
                return None
            rest = body_start + length
        elif b"transfer-encoding: chunked" in head:
            last = self.buffer.find(b"\r\n0\r\n\r\n", body_start - 2)
            if last < 0:
                return None
            rest = last + 7
        else:
            rest = body_start
        status = int(head[9:12])
        del self.buffer[:rest]
        return status

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


async def _open_loop(url: str, rate: float, duration: float, timeout: float, unique: bool,
                     headers: dict[str, str]) -> OpenLoopResult:
    parsed = urlsplit(url)
    host, port, path = parsed.hostname or "127.0.0.1", parsed.port or 80, parsed.path or "/"
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []
    total = int(rate * duration)  # bounded in count ...
    latencies: list[float] = []
    failures = 0
    worst_lag = 0.0
    nonce = uuid.uuid4().hex[:12]

    async def one(i: int) -> None:
        nonlocal failures
        started = time.perf_counter()
        target = f"{path}?n={nonce}-{i}" if unique else path
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        raw = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
        conn = None
        while idle and conn is None:
            conn = idle.pop()
            if conn.closed:  # the server ended it while it was idle (its keep-alive timeout)
                conn = None
        try:
            if conn is None:
                _, conn = await loop.create_connection(_Connection, host, port)
            status = await conn.request(raw)
        except (OSError, ValueError, RuntimeError):
            failures += 1
            if conn is not None and conn.transport is not None:
                conn.transport.close()
            return
        if status >= 400:
            failures += 1
        else:
            latencies.append(time.perf_counter() - started)
        if not conn.closed:
            idle.append(conn)

    # A warm-up fills the pool of connections, so the run measures requests, not handshakes.
    await asyncio.gather(*(one(-i) for i in range(1, 33)))
    latencies.clear()
    failures = 0
    tasks = []
    # The generator must not pause: a full collection of this process's heap (the harness imports
    # the gateway) took 50-80 ms, once per run, and those pauses were the gateway rows' p99.
    gc.collect()
    gc.freeze()
    gc.disable()
    # Waited for as they end: asyncio.wait() on them all at the end would register thousands of
    # callbacks in one go while the last requests are in flight, and delay their answers.
    outstanding = total
    all_done = loop.create_future()

    def ended(_: asyncio.Task[None]) -> None:
        nonlocal outstanding
        outstanding -= 1
        if outstanding == 0 and not all_done.done():
            all_done.set_result(None)

    try:
        start = time.perf_counter() + 0.05
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                worst_lag = max(worst_lag, -delay)
            task = asyncio.create_task(one(i))
            task.add_done_callback(ended)
            tasks.append(task)
        # ... and in time: an answer later than ``timeout`` after the last send counts as failed.
        if total:
            await asyncio.wait([all_done], timeout=timeout)
        late = [task for task in tasks if not task.done()]
    finally:
        gc.enable()
        gc.unfreeze()
    for task in late:
        task.cancel()
    failures += len(late)
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    return OpenLoopResult(rate=rate, sent=total, ok=len(latencies), failed=failures,
                          late_start_ms=worst_lag * 1000,
                          p50_ms=percentile(latencies, 50) * 1000, p99_ms=percentile(latencies, 99) * 1000)


def run_open_loop(url: str, rate: float = 1000, duration: float = 10, timeout: float = 5,
                  unique: bool = False, headers: dict[str, str] | None = None) -> OpenLoopResult:
    import uvloop  # as the gateway runs: the generator's own overhead stays small

    return uvloop.run(_open_loop(url, rate, duration, timeout, unique, headers or {}))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
