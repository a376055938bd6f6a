"""One command for the gateway's benchmarks (issue 8):

    .venv/bin/python -m tests.perf.run [--duration S] [--connections C] [--runs N] [--quick]

In one run, on this machine: the direct backend (nginx serving a fixed small JSON answer), an nginx
reverse proxy in front of it (keep-alive upstream), the bare aiohttp proxy (the floor), and the
gateway (``python -m app serve``, one uvicorn worker) on each configuration of
``tests/perf/configs.py``, with a Redis of its own. All of them are started first; then each of
``--runs`` rounds loads every configuration in turn (wrk, then the open loop), so that the machine's
slow spells fall on all of them alike. Every gateway figure is also given as a ratio to the nginx
proxy and its CPU as a ratio to the floor's in the same round, because the machine is shared and
only same-run ratios compare across runs. See the README's "Performance".
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

from tests.perf import bare_proxy, report
from tests.perf.configs import BENCH_PATH, CASES, GatewayCase, probe_components
from tests.perf.load import OpenLoopResult, median, run_open_loop, run_wrk
from tests.perf.servers import (
    Nginx,
    backend_nginx,
    proxy_nginx,
    process_cpu_seconds,
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
    # The run's Redis's CPU per request: not in cpu_us, but it runs on the same cores as the gateway.
    redis_cpu_us: float | None = None
    other_load: float | None = None  # share of the machine's CPUs used by processes not ours
    bad_answers: int = 0  # non-2xx answers and socket errors, summed over the runs
    cpu_vs_floor: float | None = None  # CPU per request over the bare proxy's, same round; median
    runs: list[dict[str, Any]] = field(default_factory=list)  # one per round
    open_loop: dict[str, Any] | None = None  # the open-loop runs' medians
    open_loop_runs: list[dict[str, Any]] = field(default_factory=list)

    def summarise(self, floor: Figures | None) -> None:
        """Each figure's median over the rounds; the CPU ratio to the floor is taken round by round."""

        def med(key: str) -> float | None:
            values = [run[key] for run in self.runs if run[key] is not None]
            return median(values) if values else None

        self.rps, self.p50_ms, self.p99_ms, self.cpu_us = med("rps"), med("p50_ms"), med("p99_ms"), med("cpu_us")
        self.redis_round_trips, self.redis_commands = med("redis_round_trips"), med("redis_commands")
        self.redis_cpu_us = med("redis_cpu_us")
        self.other_load = med("other_load")
        if floor is not None and floor.runs and self.runs:
            ratios = [mine["cpu_us"] / theirs["cpu_us"] for mine, theirs in zip(self.runs, floor.runs)
                      if theirs["cpu_us"]]
            self.cpu_vs_floor = round(median(ratios), 3) if ratios else None
        if self.open_loop_runs:
            runs = self.open_loop_runs
            self.open_loop = {
                "rate": runs[0]["rate"], "runs": len(runs),
                "sent": sum(r["sent"] for r in runs), "ok": sum(r["ok"] for r in runs),
                "failed": sum(r["failed"] for r in runs),
                "late_start_ms": median([r["late_start_ms"] for r in runs]),
                "p50_ms": median([r["p50_ms"] for r in runs]), "p99_ms": median([r["p99_ms"] for r in runs]),
            }
        if self.bad_answers and self.status == "ok":
            self.status = f"suspect: {self.bad_answers} errors or non-2xx answers"


class RedisCounters:
    """Round trips and commands per request.

    Round trips are counted by the gateways themselves (apigw_store_round_trips_total: each batch
    of script calls a request waits for once): Redis's own count of reads would undercount them, as
    the gateway's connection sends the batches of concurrent requests together. Commands (scripts'
    redis.call()s included) come from the dedicated Redis's INFO commandstats, so they include the
    background work of the configurations kept up while another is measured (breaker sync, client
    activity: a few commands a second each, ~0.01 per request)."""

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


@dataclass
class Target:
    """One configuration under load: where to send it, whose CPU to count, and its figures."""

    fig: Figures
    url: str
    pids: list[int]
    unique: bool = False  # every request its own URL (the cache-miss configuration)
    gateways: list[str] = field(default_factory=list)  # replicas whose round trips count
    open_loop: bool = True
    headers: dict[str, str] = field(default_factory=dict)  # every request's (a credential)


class Bench:
    """Every configuration is started first and kept up; then each round loads each one in turn.

    Interleaved rounds, because these machines drift: the bare proxy's CPU per request moved from
    190 to 340 us between two 5-second runs minutes apart. A slow spell then falls on every
    configuration of a round alike, and the CPU ratio to the floor is taken within a round."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.duration: float = args.duration
        self.connections: int = args.connections
        self.runs: int = args.runs
        self.started = dt.datetime.now(dt.UTC)
        self.targets: list[Target] = []
        self.results: list[Figures] = []  # the targets' figures, and those of configurations not run
        self.redis = RedisProcess()
        self.backend_port, self.proxy_port = free_port(), free_port()
        # Two-replica configurations: each its own nginx listener in front of its own replicas.
        self.fleets = {case.name: (free_port(), [free_port(), free_port()])
                       for case in CASES if case.replicas == 2}
        self.backend: Nginx | None = None
        self.proxy: Nginx | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        self.replicas: list[GatewayServer] = []

    # -- measuring ------------------------------------------------------------------------------

    def _measure(self, target: Target) -> None:
        """One wrk run against ``target``: CPU of its processes (and their children) per request."""
        fig = target.fig
        counters = self.counters if target.gateways else None
        settle()
        ours0 = tree_cpu_seconds([os.getpid()]) + _children_cpu()
        busy0, wall0 = system_busy_seconds(), time.monotonic()
        cpu0 = tree_cpu_seconds(target.pids)
        redis0 = counters.snapshot(target.gateways) if counters else None
        redis_cpu0 = process_cpu_seconds(self._redis_pid()) if counters else 0.0
        result = run_wrk(target.url, self.duration, self.connections, unique_paths=target.unique, path=BENCH_PATH,
                         headers=target.headers)
        cpu1 = tree_cpu_seconds(target.pids)
        redis_cpu = process_cpu_seconds(self._redis_pid()) - redis_cpu0 if counters else None
        trips, commands = counters.delta(redis0, target.gateways) if counters and redis0 else (None, None)
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
            "redis_cpu_us": None if redis_cpu is None else round(redis_cpu * 1e6 / n, 1),
            "other_load": round(others, 3), "errors": result.errors, "bad_status": result.bad_status,
        })
        fig.bad_answers += result.errors + result.bad_status

    def _redis_pid(self) -> int:
        assert self.redis.proc is not None, "the run's Redis is started before any configuration"
        return self.redis.proc.pid

    def _open_loop(self, target: Target) -> None:
        result: OpenLoopResult = run_open_loop(target.url + BENCH_PATH, rate=self.args.rate,
                                               duration=self.args.open_loop_duration, unique=target.unique,
                                               headers=target.headers)
        target.fig.open_loop_runs.append(asdict(result))

    def _warm(self, url: str, unique: bool, headers: dict[str, str] | None = None) -> None:
        """A short run first: connection pools filled, code paths hot, the cache filled for a hit."""
        run_wrk(url, 1, self.connections, unique_paths=unique, path=BENCH_PATH, headers=headers)

    # -- the configurations ---------------------------------------------------------------------

    def add_direct(self) -> None:
        assert self.backend is not None
        fig = Figures("direct", "direct backend (nginx, fixed JSON)")
        self.targets.append(Target(fig, f"http://127.0.0.1:{self.backend_port}", [self.backend.pid]))

    def add_nginx_proxy(self) -> None:
        assert self.proxy is not None
        # Only the proxy's own CPU: the backend's is the same in every configuration.
        fig = Figures("nginx_proxy", "nginx reverse proxy (keepalive upstream)")
        self.targets.append(Target(fig, f"http://127.0.0.1:{self.proxy_port}", [self.proxy.pid]))

    def add_bare_proxy(self) -> None:
        """The floor: the least an aiohttp ASGI proxy costs on this machine now (tests/perf/bare_proxy.py)."""
        port = free_port()
        proc = subprocess.Popen(bare_proxy.command(f"http://127.0.0.1:{self.backend_port}", port), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(proc)
        url = f"http://127.0.0.1:{port}"
        fig = Figures("bare_proxy", "bare aiohttp ASGI proxy (the floor)")
        try:
            wait_for(lambda: httpx.get(url + BENCH_PATH, timeout=1).status_code == 200, timeout=20,
                     what="the bare proxy")
        except Exception as error:
            fig.status = f"failed: {type(error).__name__}: {error}"
            self.results.append(fig)
            return
        self.targets.append(Target(fig, url, [proc.pid]))

    def add_gateway(self, case: GatewayCase, missing: dict[str, str | None]) -> None:
        fig = Figures(case.name, case.title)
        absent = [f"{name}: {missing[name]}" for name in case.needs if missing.get(name)]
        if absent:
            fig.status = f"n/a (component missing; {'; '.join(absent)})"
            self.results.append(fig)
            return
        fig.incomplete = [name for name in case.optional if missing.get(name)]
        if fig.incomplete:
            fig.title += f" [without {', '.join(fig.incomplete)}: not on main yet]"
        backend_url = f"http://127.0.0.1:{self.backend_port}"
        lb_port, ports = self.fleets.get(case.name, (None, [None]))
        replicas: list[GatewayServer] = []
        try:
            for port in ports:
                replicas.append(GatewayServer(case.config(backend_url), self.redis.url, port))
                self.replicas.append(replicas[-1])
                replicas[-1].start()
            url = f"http://127.0.0.1:{lb_port}" if lb_port else replicas[0].url
            self._warm(url, case.unique_paths, case.headers)
            problem = self._check(case, url)
        except Exception as error:
            problem = f"failed: {type(error).__name__}: {error}"
            self._print_logs(case, replicas)
        if problem:
            fig.status = problem if problem.startswith("failed") else f"n/a ({problem})"
            self.results.append(fig)
            return
        self.targets.append(Target(fig, url, [r.pid for r in replicas], unique=case.unique_paths,
                                   gateways=[r.url for r in replicas], open_loop=case.replicas == 1,
                                   headers=case.headers))

    @staticmethod
    def _print_logs(case: GatewayCase, replicas: list[GatewayServer]) -> None:
        for replica in replicas:
            tail = replica.log()[-800:]
            if tail:
                print(f"--- {case.name} replica log ---\n{tail}", file=sys.stderr)

    def _check(self, case: GatewayCase, url: str) -> str | None:
        """What the gateway process answers must be what the configuration claims to measure."""
        if case.auth is not None and httpx.get(url + BENCH_PATH, timeout=5).status_code != 401:
            return "the route answered a request without its credential"
        answer = httpx.get(url + BENCH_PATH, headers=case.headers, timeout=5)
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

    def _profile(self, target: Target) -> None:
        """py-spy's view of the gateway under the same load (an extra run, not in the figures)."""
        out = self.out_dir / f"profile-{target.fig.name}-{self.stamp}.txt"
        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                                str(target.pids[0]), "--format", "raw", "--output", str(out), "--rate", "500",
                                "--nonblocking", "--duration", str(int(self.duration) + 1)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        run_wrk(target.url, self.duration, self.connections, unique_paths=target.unique, path=BENCH_PATH,
                headers=target.headers)
        spy.wait(timeout=self.duration + 30)
        print(f"profile (collapsed stacks) written to {out}")

    # -- the run --------------------------------------------------------------------------------

    def _rounds(self) -> None:
        for round_no in range(1, self.runs + 1):
            print(f"round {round_no} of {self.runs} ...", flush=True)
            for target in self.targets:
                if target.fig.status.startswith("failed"):
                    continue
                try:
                    self._measure(target)
                    if target.open_loop:
                        self._open_loop(target)
                except Exception as error:  # one broken configuration must not lose the others' figures
                    target.fig.status = f"failed: {type(error).__name__}: {error}"

    def _summarise(self) -> None:
        floor = next((t.fig for t in self.targets if t.fig.name == "bare_proxy"), None)
        for target in self.targets:
            target.fig.summarise(floor)
            self.results.append(target.fig)
        order = ["direct", "nginx_proxy", "bare_proxy", *(case.name for case in CASES)]
        self.results.sort(key=lambda fig: order.index(fig.name))

    def run(self) -> dict[str, Any]:
        self.out_dir: Path = self.args.out
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        load_before = os.getloadavg()
        self.redis.start()
        self.counters = RedisCounters(self.redis.url)
        try:
            self.backend = backend_nginx(self.backend_port).start(self.backend_port)
            listeners = {self.proxy_port: [self.backend_port], **dict(self.fleets.values())}
            self.proxy = proxy_nginx(listeners).start(self.proxy_port)
            missing = asyncio.run(probe_components(f"http://127.0.0.1:{self.backend_port}"))
            for name, why in missing.items():
                print(f"component {name}: {'present' if why is None else 'missing (' + why + ')'}", flush=True)
            self.add_direct()
            self.add_nginx_proxy()
            self.add_bare_proxy()
            for case in CASES:
                if not self.args.only or case.name in self.args.only:
                    print(f"starting {case.name} ...", flush=True)
                    self.add_gateway(case, missing)
            for target in self.targets:
                if not target.gateways:  # each gateway was warmed when it started, for its check
                    self._warm(target.url, target.unique)
            self._rounds()
            profiled = [t for t in self.targets if t.fig.name == self.args.profile]
            if profiled:
                self._profile(profiled[0])
            self._summarise()
        finally:
            for replica in self.replicas:
                replica.stop()
            for proc in self.processes:
                proc.terminate()
                proc.wait(timeout=10)
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
                         "interleaved": True, "wrk_threads": 1, "open_loop_rate": self.args.rate,
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
    parser.add_argument("--runs", type=int, default=3,
                        help="rounds: each loads every configuration once, in turn; medians (default 3)")
    parser.add_argument("--rate", type=float, default=1000, help="open-loop requests per second (default 1000)")
    parser.add_argument("--open-loop-duration", type=float, default=None,
                        help="seconds of each round's open-loop run (default: half of --duration)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 s per run, 1 run, 2 s open loop (figures too short to quote)")
    parser.add_argument("--only", nargs="*", help="gateway configurations to run (default: all)")
    parser.add_argument("--profile", metavar="CASE", help="also record a py-spy profile of this configuration")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON and markdown go")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.runs = 2, 1
    if args.open_loop_duration is None:
        args.open_loop_duration = args.duration / 2
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
