"""One command for the gateway's benchmarks (issue 8):

    .venv/bin/python -m tests.perf.run [--duration S] [--connections C] [--runs N] [--quick]

In one run, on this machine: the direct backend (nginx serving a fixed small JSON answer), an nginx
reverse proxy in front of it (keep-alive upstream), and the gateway (``python -m app serve``, one
uvicorn worker) on each configuration of ``tests/perf/configs.py``, with a Redis of its own. Every
gateway figure is also given as a ratio to the nginx proxy measured in the same run, because the
machine is shared and only same-run ratios compare across runs. See the README's "Performance".
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.perf import report
from tests.perf.configs import BENCH_PATH, CASES, GatewayCase, probe_components
from tests.perf.load import OpenLoopResult, median, run_open_loop, run_wrk
from tests.perf.servers import (
    Nginx,
    backend_nginx,
    proxy_nginx,
    settle,
    GatewayServer,
    system_busy_seconds,
    tree_cpu_seconds,
)
from tests.support import ROOT, RedisProcess, free_port, wait_for

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_IGNORED_COMMANDS = {"info", "ping", "client|setinfo", "hello", "select", "script|load", "flushall",
                     "subscribe", "client|setname"}


@dataclass
class Figures:
    """One configuration's medians over its runs (each figure's own median)."""

    name: str
    title: str
    status: str = "ok"  # or "n/a (component missing: ...)", "failed: ..."
    incomplete: list[str] = field(default_factory=list)  # optional components not on main yet
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_us: float | None = None  # CPU of the measured process(es) per request
    redis_round_trips: float | None = None  # store round trips per request, as the gateways count them
    redis_commands: float | None = None  # Redis commands per request (pipelined ones each count)
    other_load: float | None = None  # share of the machine's CPUs used by processes not ours
    bad_answers: int = 0  # non-2xx answers and socket errors, summed over the runs
    runs: list[dict[str, Any]] = field(default_factory=list)
    open_loop: dict[str, Any] | None = None


class RedisCounters:
    """Round trips and commands per request.

    Round trips are counted by the gateways themselves (apigw_store_round_trips_total: each batch
    of script calls a request waits for once): Redis's own count of reads would undercount them, as
    the gateway's connection sends the batches of concurrent requests together. Commands (scripts'
    redis.call()s included) come from the dedicated Redis's INFO commandstats."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def snapshot(self, gateways: list[str]) -> tuple[float, int]:
        stats = self.client.info("commandstats")
        commands = sum(int(v["calls"]) for k, v in stats.items()
                       if k.removeprefix("cmdstat_") not in _IGNORED_COMMANDS)
        return sum(map(_store_round_trips, gateways)), commands

    def delta(self, before: tuple[float, int], gateways: list[str]) -> tuple[float, int]:
        trips, commands = self.snapshot(gateways)
        # The INFO that took this snapshot was one command of its own.
        return trips - before[0], commands - before[1] - 1


def _store_round_trips(gateway: str) -> float:
    text = httpx.get(f"{gateway}/_gateway/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("apigw_store_round_trips_total "):
            return float(line.split()[1])
    raise RuntimeError(f"{gateway} exports no apigw_store_round_trips_total")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.duration: float = args.duration
        self.connections: int = args.connections
        self.runs: int = args.runs
        self.started = dt.datetime.now(dt.UTC)
        self.results: list[Figures] = []
        self.redis = RedisProcess()
        self.backend_port, self.proxy_port, self.lb_port = free_port(), free_port(), free_port()
        self.replica_ports = [free_port(), free_port()]
        self.backend: Nginx | None = None
        self.proxy: Nginx | None = None

    # -- measuring ------------------------------------------------------------------------------

    def _measure(self, fig: Figures, url: str, pids: list[int], counters: RedisCounters | None,
                 unique: bool = False, gateways: list[str] | None = None) -> Figures:
        """``runs`` wrk runs against ``url``; CPU of ``pids`` (and their children) per request."""
        for _ in range(self.runs):
            settle()
            ours0 = tree_cpu_seconds([os.getpid()]) + _children_cpu()
            busy0, wall0 = system_busy_seconds(), time.monotonic()
            cpu0 = tree_cpu_seconds(pids)
            redis0 = counters.snapshot(gateways or []) if counters else None
            result = run_wrk(url, self.duration, self.connections, unique_paths=unique, path=BENCH_PATH)
            cpu1 = tree_cpu_seconds(pids)
            trips, commands = counters.delta(redis0, gateways or []) if counters and redis0 else (None, None)
            busy1, wall1 = system_busy_seconds(), time.monotonic()
            ours1 = tree_cpu_seconds([os.getpid()]) + _children_cpu()
            others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / ((wall1 - wall0) * (os.cpu_count() or 1))
            n = max(result.requests, 1)
            fig.runs.append({
                "requests": result.requests, "seconds": round(result.seconds, 3), "rps": round(result.rps, 1),
                "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                "cpu_us": round((cpu1 - cpu0) * 1e6 / n, 1),
                "redis_round_trips": None if trips is None else round(trips / n, 3),
                "redis_commands": None if commands is None else round(commands / n, 3),
                "other_load": round(others, 3), "errors": result.errors, "bad_status": result.bad_status,
            })
            fig.bad_answers += result.errors + result.bad_status

        def med(key: str) -> float | None:
            values = [run[key] for run in fig.runs if run[key] is not None]
            return median(values) if values else None

        fig.rps, fig.p50_ms, fig.p99_ms, fig.cpu_us = med("rps"), med("p50_ms"), med("p99_ms"), med("cpu_us")
        fig.redis_round_trips, fig.redis_commands = med("redis_round_trips"), med("redis_commands")
        fig.other_load = med("other_load")
        if fig.bad_answers:
            fig.status = f"suspect: {fig.bad_answers} errors or non-2xx answers"
        return fig

    def _open_loop(self, fig: Figures, url: str, unique: bool = False) -> None:
        result: OpenLoopResult = run_open_loop(url + BENCH_PATH, rate=self.args.rate,
                                               duration=self.args.open_loop_duration, unique=unique)
        fig.open_loop = asdict(result)

    def _warm(self, url: str, unique: bool) -> None:
        """A short run first: connection pools filled, code paths hot, the cache filled for a hit."""
        run_wrk(url, 1, self.connections, unique_paths=unique, path=BENCH_PATH)

    # -- the configurations ---------------------------------------------------------------------

    def measure_direct(self) -> None:
        assert self.backend is not None
        url = f"http://127.0.0.1:{self.backend_port}"
        self._warm(url, False)
        fig = self._measure(Figures("direct", "direct backend (nginx, fixed JSON)"), url, [self.backend.pid], None)
        self._open_loop(fig, url)
        self.results.append(fig)

    def measure_nginx_proxy(self) -> None:
        assert self.proxy is not None
        url = f"http://127.0.0.1:{self.proxy_port}"
        self._warm(url, False)
        # Only the proxy's own CPU: the backend's is the same in every configuration.
        fig = self._measure(Figures("nginx_proxy", "nginx reverse proxy (keepalive upstream)"), url,
                            [self.proxy.pid], None)
        self._open_loop(fig, url)
        self.results.append(fig)

    def measure_bare_proxy(self) -> None:
        """The floor: the least an aiohttp ASGI proxy costs on this machine now (tests/perf/bare_proxy.py)."""
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "tests.perf.bare_proxy",
                                 f"http://127.0.0.1:{self.backend_port}", str(port)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        fig = Figures("bare_proxy", "bare aiohttp ASGI proxy (the floor)")
        try:
            wait_for(lambda: httpx.get(url + BENCH_PATH, timeout=1).status_code == 200, timeout=20,
                     what="the bare proxy")
            self._warm(url, False)
            self._measure(fig, url, [proc.pid], None)
            self._open_loop(fig, url)
        except Exception as error:
            fig.status = f"failed: {type(error).__name__}: {error}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        self.results.append(fig)

    def measure_gateway(self, case: GatewayCase, missing: dict[str, str | None]) -> None:
        fig = Figures(case.name, case.title)
        absent = [f"{name}: {missing[name]}" for name in case.needs if missing.get(name)]
        if absent:
            fig.status = f"n/a (component missing; {'; '.join(absent)})"
            self.results.append(fig)
            return
        fig.incomplete = [name for name in case.optional if missing.get(name)]
        if fig.incomplete:
            fig.title += f" [without {', '.join(fig.incomplete)}: not on main yet]"
        self.redis_client.flushall()
        backend_url = f"http://127.0.0.1:{self.backend_port}"
        replicas: list[GatewayServer] = []
        try:
            ports = self.replica_ports if case.replicas == 2 else [None]
            replicas = [GatewayServer(case.config(backend_url), self.redis.url, port).start() for port in ports]
            url = f"http://127.0.0.1:{self.lb_port}" if case.replicas == 2 else replicas[0].url
            self._warm(url, case.unique_paths)
            problem = self._check(case, url)
            if problem:
                fig.status = f"n/a ({problem})"
                self.results.append(fig)
                return
            pids = [r.pid for r in replicas]
            self._measure(fig, url, pids, self.counters, unique=case.unique_paths, gateways=[r.url for r in replicas])
            if case.replicas == 1:
                self._open_loop(fig, url, unique=case.unique_paths)
            if self.args.profile == case.name:
                self._profile(case, url, pids[0])
        except Exception as error:  # one broken configuration must not lose the others' figures
            fig.status = f"failed: {type(error).__name__}: {error}"
            for replica in replicas:
                tail = replica.log()[-800:]
                if tail:
                    print(f"--- {case.name} replica log ---\n{tail}", file=sys.stderr)
        finally:
            for replica in replicas:
                replica.stop()
        self.results.append(fig)

    def _check(self, case: GatewayCase, url: str) -> str | None:
        """What the gateway process answers must be what the configuration claims to measure."""
        answer = httpx.get(url + BENCH_PATH, timeout=5)
        if answer.status_code != 200:
            return f"the route answered {answer.status_code}: {answer.text[:200]}"
        if case.warm_cache and answer.headers.get("x-cache") != "HIT":
            return f"a warmed path answered X-Cache: {answer.headers.get('x-cache')}, not HIT"
        if case.unique_paths and case.cache:
            fresh = f"{url}{BENCH_PATH}?n=check-{time.monotonic_ns()}"
            first, second = httpx.get(fresh, timeout=5), httpx.get(fresh, timeout=5)
            if first.headers.get("x-cache") != "MISS" or second.headers.get("x-cache") != "HIT":
                return (f"a new path answered X-Cache {first.headers.get('x-cache')} then "
                        f"{second.headers.get('x-cache')}, not MISS then HIT (answer not stored)")
        return None

    def _profile(self, case: GatewayCase, url: str, pid: int) -> None:
        """py-spy's view of the gateway under the same load (an extra run, not in the figures)."""
        out = self.out_dir / f"profile-{case.name}-{self.stamp}.txt"
        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
                                "--format", "raw", "--output", str(out), "--rate", "500", "--nonblocking",
                                "--duration", str(int(self.duration) + 1)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        run_wrk(url, self.duration, self.connections, unique_paths=case.unique_paths, path=BENCH_PATH)
        spy.wait(timeout=self.duration + 30)
        print(f"profile (collapsed stacks) written to {out}")

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.out_dir: Path = self.args.out
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        load_before = os.getloadavg()
        self.redis.start()
        self.redis_client = redis.Redis.from_url(self.redis.url)
        self.counters = RedisCounters(self.redis.url)
        try:
            self.backend = backend_nginx(self.backend_port).start(self.backend_port)
            self.proxy = proxy_nginx({self.proxy_port: [self.backend_port],
                                      self.lb_port: self.replica_ports}).start(self.proxy_port)
            missing = asyncio.run(probe_components(f"http://127.0.0.1:{self.backend_port}"))
            for name, why in missing.items():
                print(f"component {name}: {'present' if why is None else 'missing (' + why + ')'}", flush=True)
            self.measure_direct()
            self.measure_nginx_proxy()
            self.measure_bare_proxy()
            for case in CASES:
                if self.args.only and case.name not in self.args.only:
                    continue
                print(f"measuring {case.name} ...", flush=True)
                self.measure_gateway(case, missing)
        finally:
            for server in (self.proxy, self.backend):
                if server is not None:
                    server.stop()
            self.redis.stop()
        return {
            "stamp": self.stamp,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "commit": _commit(),
            "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "settings": {"duration_s": self.duration, "connections": self.connections, "runs": self.runs,
                         "wrk_threads": 1, "open_loop_rate": self.args.rate,
                         "open_loop_duration_s": self.args.open_loop_duration, "quick": self.args.quick},
            "components": {k: ("present" if v is None else f"missing: {v}") for k, v in missing.items()},
            "results": [asdict(fig) for fig in self.results],
        }


def _children_cpu() -> float:
    """CPU of our children that ended (wrk runs), which /proc no longer shows."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "app"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per configuration; medians (default 3)")
    parser.add_argument("--rate", type=float, default=1000, help="open-loop requests per second (default 1000)")
    parser.add_argument("--open-loop-duration", type=float, default=None,
                        help="seconds of the open-loop run (default: --duration)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 s per run, 1 run, 2 s open loop (figures too short to quote)")
    parser.add_argument("--only", nargs="*", help="gateway configurations to run (default: all)")
    parser.add_argument("--profile", metavar="CASE", help="also record a py-spy profile of this configuration")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON and markdown go")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.runs = 2, 1
    if args.open_loop_duration is None:
        args.open_loop_duration = args.duration
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = Bench(args).run()
    text = report.render(data)
    print(text)
    stamp = data["stamp"]
    for name in (f"{stamp}", "latest"):
        (args.out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
        (args.out / f"{name}.md").write_text(text + "\n")
    print(f"results written to {args.out}/{stamp}.json and .md (and latest.*)")
    broken = [r["name"] for r in data["results"] if r["status"].startswith("failed")]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
