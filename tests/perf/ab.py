"""A/B: is this checkout's gateway cheaper than an older commit's, on one configuration?

    .venv/bin/python -m tests.perf.ab BASE_REV [--case gw_proxy] [--rounds 6] [--duration 5]

Both gateways run at once (the older one from ``git archive BASE_REV app lua`` in a temp dir), and
wrk runs alternate between them in ABBA order, so a change in the machine's other load falls on
both alike. It prints the medians and the ratio B/A of CPU per request and req/s, and the exact
count of Python bytecodes per request of each (tests.perf.opcount), which other work on the machine
cannot move: the before/after figures quoted in the commit messages of hot-path changes.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tests.perf.configs import BENCH_PATH, CASES
from tests.perf.load import median, run_wrk
from tests.perf.servers import GatewayServer, backend_nginx, settle, tree_cpu_seconds
from tests.support import ROOT, RedisProcess, free_port


def export(rev: str) -> Path:
    """The gateway's code at ``rev``, in a temp dir a ``python -m app`` can run from."""
    archive = subprocess.run(["git", "archive", rev, "app", "lua"], cwd=ROOT, capture_output=True, check=True).stdout
    target = Path(tempfile.mkdtemp(prefix=f"apigw-ab-{rev[:10]}-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def _bytecodes(source: Path, case: str) -> float:
    out = subprocess.run([sys.executable, "-m", "tests.perf.opcount", "--source", str(source), "--case", case],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=300).stdout
    return float(out.split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the commit to compare with (A); B is this checkout")
    parser.add_argument("--case", default="gw_proxy", choices=[c.name for c in CASES if c.replicas == 1])
    parser.add_argument("--rounds", type=int, default=6, help="runs of each side (default 6; 0: bytecodes only)")
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    case = next(c for c in CASES if c.name == args.case)
    base_tree = export(args.base)
    backend_port = free_port()
    figures: dict[str, dict[str, list[float]]] = {side: {"cpu": [], "rps": [], "p99": []} for side in "AB"}
    with RedisProcess() as redis_server:
        backend = backend_nginx(backend_port).start(backend_port)
        config = case.config(f"http://127.0.0.1:{backend_port}")
        sides = {"A": GatewayServer(config, redis_server.url, source=base_tree),
                 "B": GatewayServer(config, redis_server.url, source=ROOT)}
        try:
            for server in sides.values():
                server.start()
                run_wrk(server.url, 1, args.connections, unique_paths=case.unique_paths, path=BENCH_PATH)
            order = ["A", "B", "B", "A"] * ((args.rounds + 1) // 2)
            for side in order[: 2 * args.rounds]:
                server = sides[side]
                settle()
                cpu0 = tree_cpu_seconds([server.pid])
                result = run_wrk(server.url, args.duration, args.connections, unique_paths=case.unique_paths,
                                 path=BENCH_PATH)
                cpu = (tree_cpu_seconds([server.pid]) - cpu0) * 1e6 / max(result.requests, 1)
                figures[side]["cpu"].append(cpu)
                figures[side]["rps"].append(result.rps)
                figures[side]["p99"].append(result.p99_ms)
                print(f"{side}: {result.rps:8.0f} req/s  {cpu:6.1f} us/req  p50 {result.p50_ms:.2f} ms", flush=True)
        finally:
            for server in sides.values():
                server.stop()
            backend.stop()
    ops = {side: _bytecodes(source, case.name) for side, source in (("A", base_tree), ("B", ROOT))}
    shutil.rmtree(base_tree, ignore_errors=True)
    a_cpu, b_cpu = median(figures["A"]["cpu"]), median(figures["B"]["cpu"])
    a_rps, b_rps = median(figures["A"]["rps"]), median(figures["B"]["rps"])
    print(f"{case.name}, {args.rounds} runs each of {args.duration:g} s, medians:")
    a_p99, b_p99 = median(figures["A"]["p99"]), median(figures["B"]["p99"])
    print(f"  A {args.base}: {a_cpu:.1f} us/req, {a_rps:.0f} req/s, p99 {a_p99:.2f} ms")
    print(f"  B this checkout: {b_cpu:.1f} us/req, {b_rps:.0f} req/s, p99 {b_p99:.2f} ms")
    print(f"  B/A: CPU per request {b_cpu / a_cpu:.3f}, req/s {b_rps / a_rps:.3f}, p99 {b_p99 / a_p99:.3f}")
    print(f"  Python bytecodes per request (tests.perf.opcount, exact): A {ops['A']:.0f}, B {ops['B']:.0f}, "
          f"B/A {ops['B'] / ops['A']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
