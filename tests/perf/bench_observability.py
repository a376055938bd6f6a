"""What the access log and the request metrics cost (issue 7), as same-run ratios:

    .venv/bin/python -m tests.perf.bench_observability [--duration S] [--runs N]

One nginx backend, one Redis, and two gateway replicas (``python -m app serve``) on the proxy-only
route, one with ``server.access_log`` on (its lines go to a file, as a container's stdout would) and
one with it off; wrk drives them in turn, interleaved, and the medians are compared. The request
metrics are on in both (they cannot be turned off); their cost is in the proxy-only figure of
tests/perf/run.py. CPU per request is the replica's own CPU time over the requests it answered.
"""

from __future__ import annotations

import argparse
import statistics

from tests.perf.configs import BENCH_PATH, gateway_config
from tests.perf.load import run_wrk
from tests.perf.servers import GatewayServer, backend_nginx, settle, tree_cpu_seconds
from tests.support import RedisProcess, free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    backend_port = free_port()
    with RedisProcess() as redis_server:
        backend = backend_nginx(backend_port).start(backend_port)
        base = gateway_config(f"http://127.0.0.1:{backend_port}", rate_limit=False, cache=False, breaker=False)
        replicas = {
            "access_log on": GatewayServer({**base, "server": {"access_log": True}}, redis_server.url).start(),
            "access_log off": GatewayServer({**base, "server": {"access_log": False}}, redis_server.url).start(),
        }
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in replicas}
        try:
            for name, replica in replicas.items():  # warm-up: connections, JIT-free but caches
                run_wrk(replica.url + BENCH_PATH, 1, args.connections)
            for _ in range(args.runs):
                for name, replica in replicas.items():
                    settle()
                    assert replica.proc is not None
                    cpu = tree_cpu_seconds([replica.proc.pid])
                    result = run_wrk(replica.url + BENCH_PATH, args.duration, args.connections)
                    used = tree_cpu_seconds([replica.proc.pid]) - cpu
                    assert result.errors == 0 and result.bad_status == 0, result
                    figures[name].append((result.rps, used / result.requests * 1e6))
        finally:
            for replica in replicas.values():
                replica.stop()
            backend.stop()
    medians = {name: (statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs))
               for name, runs in figures.items()}
    for name, (rps, cpu_us) in medians.items():
        print(f"{name:15s} {rps:9.0f} req/s  {cpu_us:6.1f} us CPU/request")
    on, off = medians["access_log on"], medians["access_log off"]
    print(f"access log on/off: throughput x{on[0] / off[0]:.3f}, CPU per request x{on[1] / off[1]:.3f}")


if __name__ == "__main__":
    main()
