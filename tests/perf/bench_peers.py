"""The rate-limited route against its peers, and 1 worker against 2, as same-run ratios.

Contestants, all in front of the same nginx backend (a fixed small JSON answer), every request
counted per client (``X-Client-ID``, 1,000 clients in turn) against limits the load never reaches:

- direct: the backend itself (the baseline for added latency);
- nginx ``limit_req`` and HAProxy's stick table: the C proxies, one worker / one thread each;
- the gateway, ``serve`` with 1 worker and with ``--workers 2``, limits in Redis (minute + hour);
- the seed's pattern (tests/perf/seed_pattern.py): FastAPI middleware, one Redis script per
  request, httpx to the backend, one uvicorn process.

The gateway and the seed pattern share one redis-server of the run's own. Every contestant is
started and warmed first; then each round loads every one in turn with wrk (one thread, fixed
connections and seconds), so that the machine's slow spells fall on all alike; medians of the
rounds. Beside each run, the share of the machine's cores that went to the contestant, to wrk, to
the backend, to Redis and to everything else (other users of the machine) says what competed.

Run: .venv/bin/python -m tests.perf.bench_peers [--seconds 5] [--connections 32] [--rounds 3] [--json]
[--out tests/perf/results]
(needs nginx, haproxy, redis-server and wrk: tests/perf/setup.sh). Loopback only; every load run
is bounded by wrk's duration. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.perf.configs import BENCH_PATH, gateway_config
from tests.perf.load import run_wrk
from tests.perf.peers import HAProxy, SeedPattern, nginx_limited
from tests.perf.servers import (
    GatewayServer,
    backend_nginx,
    settle,
    system_busy_seconds,
    tree_cpu_seconds,
)
from tests.support import ROOT, RedisProcess, free_port

CLIENTS = 1000
# Out of reach for every contestant: each request is counted, none refused.
PER_MINUTE = 10**9


class Process(Protocol):
    @property
    def pid(self) -> int: ...

    def stop(self) -> None: ...


@dataclass
class Contestant:
    name: str
    title: str
    url: str
    process: Process
    runs: list[dict[str, float]] = field(default_factory=list)

    def median(self, key: str) -> float:
        return statistics.median(run[key] for run in self.runs)


def start_contestants(backend_port: int, redis: RedisProcess, limit: int, *, gateway: bool = True) -> list[Contestant]:
    """Every contestant up, each with the same per-client limit (per minute)."""
    backend_url = f"http://127.0.0.1:{backend_port}"
    started: list[Contestant] = []
    try:
        port = free_port()
        # limit_req's unit is per second or per minute; a limit this high only counts.
        rate = f"{limit // 60}r/s" if limit >= 60_000 else f"{limit}r/m"
        burst = 0 if limit >= 60_000 else limit - 1
        nginx = nginx_limited(port, backend_port, rate, burst)
        started.append(Contestant("nginx_limit_req", "nginx, limit_req by X-Client-ID", f"http://127.0.0.1:{port}",
                                  nginx))
        nginx.start(port)
        haproxy = HAProxy(free_port(), backend_port, limit).start()
        started.append(Contestant("haproxy", "HAProxy, stick table by X-Client-ID", haproxy.url, haproxy))
        if gateway:
            limits = {"requests_per_minute": limit, "requests_per_hour": limit * 100}
            config = gateway_config(backend_url, rate_limit=True, cache=False, breaker=False, limits=limits)
            # X-Client-ID believed from loopback, as the peers believe it: one client's counters per
            # request (else each id is a sub-account of its address, charged with the address too).
            config["rate_limiter"]["client_id_trusted_from"] = ["127.0.0.1/32"]
            for workers in (1, 2):
                server = GatewayServer(config, redis.url, workers=workers).start()
                started.append(Contestant(f"gateway_{workers}w", f"gateway, {workers} worker{'s' * (workers > 1)}",
                                          server.url, server))
        seed = SeedPattern(free_port(), backend_url, redis.url, limit, f"seed-{uuid.uuid4().hex[:8]}").start()
        started.append(Contestant("seed_pattern", "seed pattern: FastAPI + Redis script + httpx", seed.url, seed))
    except BaseException:
        for contestant in started:
            contestant.process.stop()
        raise
    return started


def _wrk_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(contestant: Contestant, seconds: int, connections: int, backend_pid: int, redis_pid: int) -> None:
    settle()
    cores = os.cpu_count() or 1
    pids = {"self": [contestant.process.pid], "backend": [backend_pid], "redis": [redis_pid]}
    if contestant.process.pid == backend_pid:
        pids["backend"] = []
    before = {k: tree_cpu_seconds(v) for k, v in pids.items()}
    wrk0, busy0, wall0 = _wrk_cpu(), system_busy_seconds(), time.monotonic()
    result = run_wrk(contestant.url, seconds, connections, path=BENCH_PATH, clients=CLIENTS)
    wall = time.monotonic() - wall0
    busy, wrk = system_busy_seconds() - busy0, _wrk_cpu() - wrk0
    used = {k: tree_cpu_seconds(v) - before[k] for k, v in pids.items()}
    if result.errors or result.bad_status:
        raise RuntimeError(f"{contestant.name}: {result.errors} errors, {result.bad_status} non-2xx answers"
                           " (a refusal means the limit was reached: it must not be)")
    n = max(result.requests, 1)
    share = lambda cpu: round(cpu / (wall * cores), 3)  # a share of the machine's cores
    contestant.runs.append({
        "rps": round(result.rps, 1), "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
        "cpu_us": round(used["self"] * 1e6 / n, 1), "redis_cpu_us": round(used["redis"] * 1e6 / n, 1),
        "share_self": share(used["self"]), "share_wrk": share(wrk), "share_backend": share(used["backend"]),
        "share_redis": share(used["redis"]),
        "share_others": share(max(0.0, busy - wrk - sum(used.values()))),  # the machine's other tenants, the harness
    })


def run(seconds: int = 5, connections: int = 32, rounds: int = 3) -> dict[str, Any]:
    started = time.monotonic()
    with RedisProcess() as redis:
        backend_port = free_port()
        backend = backend_nginx(backend_port).start(backend_port)
        contestants = [Contestant("direct", "direct backend (nginx, fixed JSON)", f"http://127.0.0.1:{backend_port}",
                                  backend)]
        try:
            contestants += start_contestants(backend_port, redis, PER_MINUTE)
            assert redis.proc is not None
            for contestant in contestants:  # warm: pools filled, scripts loaded
                run_wrk(contestant.url, 1, connections, path=BENCH_PATH, clients=CLIENTS)
            for _ in range(rounds):
                for contestant in contestants:
                    measure(contestant, seconds, connections, backend.pid, redis.proc.pid)
        finally:
            for contestant in contestants[1:]:
                contestant.process.stop()
            backend.stop()
    return {"commit": _commit(), "seconds": seconds, "connections": connections, "rounds": rounds, "clients": CLIENTS,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()], "wall_s": round(time.monotonic() - started),
            "contestants": {c.name: {"title": c.title, "runs": c.runs} for c in contestants}}


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def _med(results: dict[str, Any], name: str, key: str) -> float:
    return statistics.median(run[key] for run in results["contestants"][name]["runs"])


def _ratio(results: dict[str, Any], name: str, other: str, key: str) -> float:
    """The median over rounds of name's figure over other's in the same round."""
    pairs = zip(results["contestants"][name]["runs"], results["contestants"][other]["runs"])
    return statistics.median(mine[key] / theirs[key] for mine, theirs in pairs if theirs[key])


def report(results: dict[str, Any]) -> str:
    title = (f"Rate-limited route, wrk -t1 -c{results['connections']} {results['seconds']}s, {results['clients']}"
             f" clients by X-Client-ID, median of {results['rounds']} interleaved rounds (run took"
             f" {results['wall_s']} s)")
    header = ("| contestant | req/s | p50 ms | p99 ms | added p99 ms | CPU us/req | Redis CPU us/req"
              " | req/s vs gateway 1w | CPU/req vs gateway 1w"
              " | share of the 2 cores: itself / wrk / backend / Redis / others |")
    lines = [title, "", header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, data in results["contestants"].items():
        rps, p99 = _med(results, name, "rps"), _med(results, name, "p99_ms")
        added = "-" if name == "direct" else f"{p99 - _med(results, 'direct', 'p99_ms'):.2f}"
        redis_cpu = _med(results, name, "redis_cpu_us")
        vs = "-" if name == "direct" else f"{_ratio(results, name, 'gateway_1w', 'rps'):.2f}x"
        cpu_vs = "-" if name == "direct" else f"{_ratio(results, name, 'gateway_1w', 'cpu_us'):.2f}x"
        shares = " / ".join(f"{_med(results, name, k) * 100:.0f}%" for k in
                            ("share_self", "share_wrk", "share_backend", "share_redis", "share_others"))
        lines.append(f"| {data['title']} | {rps:,.0f} | {_med(results, name, 'p50_ms'):.2f} | {p99:.2f} | {added}"
                     f" | {_med(results, name, 'cpu_us'):.0f} | {redis_cpu:.0f} | {vs} | {cpu_vs} | {shares} |")
    workers = (f"2 workers / 1 worker: req/s {_ratio(results, 'gateway_2w', 'gateway_1w', 'rps'):.2f}x,"
               f" CPU/req {_ratio(results, 'gateway_2w', 'gateway_1w', 'cpu_us'):.2f}x (medians of same-round ratios)")
    lines += ["", workers,
              "added p99: the contestant's p99 minus the direct backend's, under the same closed-loop load."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    parser.add_argument("--out", type=Path, help="also write peers-<UTC time>.json and .md there")
    args = parser.parse_args(argv)
    results = run(args.seconds, args.connections, args.rounds)
    print(report(results))
    if args.out:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        (args.out / f"peers-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / f"peers-{stamp}.md").write_text(report(results) + "\n")
        print(f"written to {args.out}/peers-{stamp}.json and .md")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
