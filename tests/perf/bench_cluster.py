"""A Redis Cluster against one Redis: what the gateway pays per request for a store of 3 masters.

Two configurations, each on both stores: the rate-limited route (gw_ratelimit) and the cache hit
(gw_hit). Four gateway replicas (``python -m app serve``) run at once in front of one nginx backend:
each configuration on one Redis and on a Redis Cluster of 3 masters (no replicas: a replica's
replication costs its master, not the gateway). wrk runs alternate between the two stores of a
configuration, single then cluster in one round and cluster then single in the next, so the
machine's other load falls on both alike. Per run: the gateway's CPU per request (the process's
CPU time over the requests wrk completed) and its round trips per request
(apigw_store_round_trips_total, which counts one per batch a request waits for, however many
masters the batch reaches). It prints the median of each over the rounds and the ratio cluster /
single.

Run: .venv/bin/python -m tests.perf.bench_cluster [--rounds 5] [--duration 3] [--connections 32]
(needs redis-server, redis-cli, nginx and wrk: tests/perf/setup.sh). Loopback only; every run is
bounded by wrk's duration. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys

import httpx

from tests.perf.configs import BENCH_PATH, CASES
from tests.perf.load import median, run_wrk
from tests.perf.run import _store_round_trips
from tests.perf.servers import GatewayServer, backend_nginx, settle, tree_cpu_seconds
from tests.redis_topologies import RedisClusterProcesses
from tests.support import RedisProcess, free_port, wait_for

MEASURED = ("gw_ratelimit", "gw_hit")
STORES = ("single", "cluster")


def _warm(url: str, hit: bool) -> None:
    """A first run's connections and caches; for the hit configuration, the entry every request hits."""
    if hit:
        wait_for(lambda: httpx.get(url + BENCH_PATH, timeout=5).headers.get("x-cache") == "HIT", timeout=10,
                 what="a cache hit")
    run_wrk(url, 1, 8, path=BENCH_PATH)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.bench_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of each store per configuration (default 5)")
    parser.add_argument("--duration", type=float, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    cases = [case for case in CASES if case.name in MEASURED]
    backend_port = free_port()
    figures: dict[tuple[str, str], dict[str, list[float]]] = {
        (case.name, store): {"cpu": [], "trips": [], "rps": []} for case in cases for store in STORES}
    with RedisProcess() as single, RedisClusterProcesses(masters=3, replicas_each=0) as cluster:
        # A cluster node's URL: the gateway finds the cluster from it (INFO cluster) and uses it as the seed.
        urls = {"single": single.url, "cluster": cluster.nodes[0].url}
        backend = backend_nginx(backend_port).start(backend_port)
        servers = {(case.name, store): GatewayServer(case.config(f"http://127.0.0.1:{backend_port}"), urls[store])
                   for case in cases for store in STORES}
        try:
            for server in servers.values():
                server.start(wait=False)
            for (name, _), server in servers.items():
                wait_for(server._healthy, timeout=30, what=f"gateway on {server.port}")
                _warm(server.url, hit=name == "gw_hit")
            for case in cases:
                for turn in range(args.rounds):
                    for store in STORES if turn % 2 == 0 else reversed(STORES):
                        server = servers[(case.name, store)]
                        settle()
                        cpu0, trips0 = tree_cpu_seconds([server.pid]), _store_round_trips(server.url)
                        result = run_wrk(server.url, args.duration, args.connections, path=BENCH_PATH)
                        cpu = tree_cpu_seconds([server.pid]) - cpu0
                        trips = _store_round_trips(server.url) - trips0
                        if result.errors or result.bad_status:
                            raise RuntimeError(f"{case.name} on {store}: {result.errors} errors, "
                                               f"{result.bad_status} non-2xx answers")
                        done = max(result.requests, 1)
                        figure = figures[(case.name, store)]
                        figure["cpu"].append(cpu * 1e6 / done)
                        figure["trips"].append(trips / done)
                        figure["rps"].append(result.rps)
                        print(f"{case.name:13} {store:8} {result.rps:8.0f} req/s  {cpu * 1e6 / done:6.1f} us/req  "
                              f"{trips / done:.3f} round trips/req", flush=True)
        finally:
            for server in servers.values():
                server.stop()
            backend.stop()
    print(f"\nmedians of {args.rounds} interleaved runs of {args.duration:g} s, {args.connections} connections:")
    for case in cases:
        one, many = (figures[(case.name, store)] for store in STORES)
        print(f"  {case.name}: one Redis {median(one['cpu']):.1f} us/req, {median(one['trips']):.3f} round trips/req, "
              f"{median(one['rps']):.0f} req/s; cluster of 3 masters {median(many['cpu']):.1f} us/req, "
              f"{median(many['trips']):.3f} round trips/req, {median(many['rps']):.0f} req/s")
        print(f"    cluster / one Redis: CPU per request {median(many['cpu']) / median(one['cpu']):.3f}, "
              f"round trips per request {median(many['trips']) / median(one['trips']):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
