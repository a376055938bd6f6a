"""Machine instructions per request of the floor and the gateway, counted by valgrind's callgrind.

CPU per request on this shared two-core machine moved from 98 to 158 us between runs of one build
minutes apart, more than any single change saves. ``tests.perf.opcount`` is exact, but it counts
only Python bytecodes: what C code does (uvloop, the HTTP parsers, hiredis, CPython's own slow
paths: a class with ``__getattr__``, ``bytes in bytes``) is invisible to it. This counts every
user-space instruction the measured process runs while wrk loads it, C included, and divides by
the requests wrk saw answered:

    python -m tests.perf.instructions [--cases floor gw_proxy gw_ratelimit gw_miss gw_hit]
                                      [--seconds 10] [--source DIR]

``floor`` is tests/perf/bare_proxy.py; the others are tests.perf.configs' cases, on a redis-server
of the run's own (not counted: another process). Under valgrind a process runs some fifty times
slower, so wrk's 32 connections keep it saturated: the figures are those of a busy process, where
several requests share each turn of the event loop.

What a process runs per second whatever its load (timers, the access log's writer waking every 50
ms, the config watch) is some 2.3 million instructions for a gateway: little at its real rate, but
under valgrind a run answers only a hundred or so requests a second, so that cost, spread over them,
moved the per-request figure with the run's throughput by up to 3%. So each process is also counted
idle after its load, and that rate, times the load's duration, is taken out of the load's count.
Three runs of one build then agreed within 0.3% (hit) to 0.8% (stored miss), and 1.1% for the
floor; a change smaller than that still needs several runs of each.

What it does not count: the kernel's work for system calls, and time itself. An instruction count
is not a CPU time (a cache miss or a system call costs far more than its instructions), so read a
change's effect here, and its cost in time with ``tests.perf.ab`` or ``timeit``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.perf import bare_proxy
from tests.perf.configs import BENCH_PATH, CASES
from tests.perf.load import run_wrk
from tests.perf.servers import GatewayServer, backend_nginx
from tests.support import ROOT, RedisProcess, free_port, wait_for

DEFAULT_CASES = ("floor", "gw_proxy", "gw_ratelimit", "gw_miss", "gw_hit")
# After the load: how long its last requests are given to finish, then how long the process is
# counted idle.
SETTLE_SECONDS = 2.0
IDLE_SECONDS = 4.0


@dataclass(frozen=True)
class Count:
    case: str
    requests: int
    instructions: int  # while wrk loaded the process
    seconds: float = 0.0  # how long that window was
    idle_per_second: float = 0.0  # what the same process ran per second once the load was over

    @property
    def per_request(self) -> float:
        """The load's instructions less the idle process's over as long (its timers and threads,
        a per-second cost), per request."""
        return (self.instructions - self.idle_per_second * self.seconds) / self.requests


def dump_total(path: Path) -> int:
    """The instructions a callgrind dump holds (its ``totals:`` line, or ``summary:``)."""
    for line in path.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise ValueError(f"{path} holds no totals line: not a callgrind dump")


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=60)


def count(case: str, seconds: float, backend_url: str, redis_url: str, source: Path, out: Path) -> Count:
    """One process under callgrind, its instructions counted only while wrk loads it."""
    port = free_port()
    dump = out / case
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={dump}"]
    unique = False
    if case == "floor":
        command = bare_proxy.command(backend_url, port)
        env = dict(os.environ)
    else:
        spec = next(c for c in CASES if c.name == case)
        unique = spec.unique_paths
        gateway = GatewayServer(spec.config(backend_url), redis_url, port)
        command = gateway.command
        env = gateway.env
    # The benchmark modules come from this checkout, the gateway's code from ``source``.
    env["PYTHONPATH"] = os.pathsep.join([str(source), str(ROOT)])
    with open(out / f"{case}.log", "wb") as log:
        process = subprocess.Popen(valgrind + command, cwd=source, env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(url + BENCH_PATH, timeout=30).status_code == 200, timeout=600,
                 what=f"{case} under valgrind")
        run_wrk(url, 5, 32, unique_paths=unique, path=BENCH_PATH)  # warm: connection pools, lazily built structures
        _control(process.pid, "-i", "on")
        started = time.monotonic()
        load = run_wrk(url, seconds, 32, unique_paths=unique, path=BENCH_PATH)
        _control(process.pid, "-d")  # the load's count; a dump zeroes the counters
        loaded = time.monotonic() - started
        # The requests in flight when wrk stopped finish first (not counted: neither load nor idle).
        time.sleep(SETTLE_SECONDS)
        _control(process.pid, "-d")
        started = time.monotonic()
        time.sleep(IDLE_SECONDS)
        _control(process.pid, "-d")  # the idle process's count
        idle = time.monotonic() - started
        _control(process.pid, "-i", "off")
    finally:
        process.terminate()
        process.wait(timeout=120)
    if load.errors or load.bad_status or not load.requests:
        raise RuntimeError(f"{case}: {load.requests} answers, {load.errors} errors, {load.bad_status} not 2xx/3xx")
    # The three dumps made above, in their order (callgrind numbers them .1, .2, .3).
    load_dump, _settled, idle_dump = sorted(
        (path for path in out.iterdir() if path.name.startswith(f"{case}.") and path.suffix[1:].isdigit()),
        key=lambda path: int(path.suffix[1:]))
    return Count(case, load.requests, dump_total(load_dump), loaded, dump_total(idle_dump) / idle)


def report(counts: list[Count]) -> str:
    floor = next((c for c in counts if c.case == "floor"), None)
    lines = ["| configuration | requests | instructions/request | to the floor |", "|---|---:|---:|---:|"]
    for c in counts:
        ratio = f"{c.per_request / floor.per_request:.2f}x" if floor is not None else "-"
        lines.append(f"| {c.case} | {c.requests:,} | {c.per_request:,.0f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES),
                        choices=["floor", *(c.name for c in CASES if c.replicas == 1)])
    parser.add_argument("--seconds", type=float, default=10, help="seconds of counted load per case (default 10)")
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout whose app/ to run (default: this one)")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("valgrind", "callgrind_control", "wrk") if shutil.which(tool) is None]
    if missing:
        print(f"{', '.join(missing)} not installed (apt-get install valgrind wrk)", file=sys.stderr)
        return 2
    out = Path(tempfile.mkdtemp(prefix="apigw-instructions-"))
    port = free_port()
    backend = backend_nginx(port).start(port)
    counts = []
    try:
        with RedisProcess() as redis:
            for case in args.cases:
                counts.append(count(case, args.seconds, f"http://127.0.0.1:{port}", redis.url, args.source.resolve(), out))
                print(f"{case}: {counts[-1].per_request:,.0f} instructions per request "
                      f"({counts[-1].idle_per_second:,.0f} per second idle, subtracted)", flush=True)
    finally:
        backend.stop()
        shutil.rmtree(out, ignore_errors=True)
    print(report(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
