"""Rate limiting cost, as same-run ratios on this machine.

1. The script on Redis: redis-benchmark runs EVALSHA of ``lua/ratelimit.lua`` (the seed's default
   limits, minute + hour; and every limit at once: burst, second, minute, hour, day) against EVALSHA
   of a trivial script (``return 1``), same Redis, same client count, without and with pipelining
   (-P 16, where the script's own CPU shows rather than the round trip). Keys are spread over 100,000
   random clients; the limits are out of reach, so every call takes the charging path.
2. The library path: ``ApiGatewayRateLimiter.check`` decisions/second through redis-py (asyncio,
   hiredis) with 32 concurrent callers, against EVALSHA of the trivial script on the same client.
3. The gateway: one replica (``python -m app serve``) in front of an nginx backend, with limiting
   on (out-of-reach limits: every request is checked and counted) and off, alternating A/B/A/B
   with wrk (one thread, fixed connections, fixed seconds); medians and the on/off ratio.

Run: .venv/bin/python -m tests.perf.bench_ratelimit [--seconds 5] [--connections 32] [--rounds 3]
(needs redis-server, redis-benchmark, nginx and wrk: tests/perf/setup.sh). Loopback only; every
load run is bounded by a request count or wrk's duration. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

from app.config import RateLimiterSection, RateLimitSpec
from app.rate_limiter import ApiGatewayRateLimiter
from app.ratelimit.limits import limits_of
from app.ratelimit.protocol import ratelimit_call
from app.store.redis import RedisStore
from app.store.script_sources import script_sources
from tests.perf.configs import BENCH_PATH, gateway_config
from tests.perf.load import run_wrk
from tests.perf.servers import GatewayServer, backend_nginx, settle
from tests.support import RedisProcess, free_port

TRIVIAL = "return 1"
# The seed's default shape (a minute and an hour window) and every limit at once, all out of reach.
SEED_DEFAULT = RateLimitSpec(requests_per_minute=10**9, requests_per_hour=10**9)
EVERY_LIMIT = RateLimitSpec(requests_per_second=10**9, requests_per_minute=10**9, requests_per_hour=10**9,
                            requests_per_day=10**9, burst_size=10**9)
OUT_OF_REACH = RateLimitSpec(requests_per_minute=10**9, requests_per_hour=10**9)


def _script_args(spec: RateLimitSpec) -> tuple[list[str], list[str]]:
    """KEYS and ARGV as the limiter sends them, with a random client per key (__rand_int__)."""
    limits = limits_of(spec)
    keys = [f"apigw:rl:{{c__rand_int__}}:{limit.name}" for limit in limits]
    return keys, [str(a) for a in ratelimit_call(tuple(keys), limits).args]


def redis_benchmark(port: int, command: list[str], requests: int, clients: int, pipeline: int) -> float:
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "-c", str(clients),
         "-P", str(pipeline), "-r", "100000", "--csv", *command],
        capture_output=True, text=True, timeout=120, check=True)
    rows = list(csv.reader(io.StringIO(out.stdout)))
    return float(rows[-1][1])


def bench_script(port: int, requests: int, clients: int) -> dict[str, Any]:
    import redis

    client = redis.Redis(port=port)
    trivial = client.script_load(TRIVIAL)
    ours = client.script_load(script_sources()["ratelimit"])
    results: dict[str, Any] = {}
    for pipeline in (1, 16):
        base = redis_benchmark(port, ["evalsha", trivial, "0"], requests, clients, pipeline)
        row = {"trivial_evalsha_per_s": base}
        for name, spec in (("seed_default", SEED_DEFAULT), ("every_limit", EVERY_LIMIT)):
            keys, args = _script_args(spec)
            rps = redis_benchmark(port, ["evalsha", ours, str(len(keys)), *keys, *args], requests, clients, pipeline)
            row[f"{name}_per_s"] = rps
            row[f"{name}_ratio"] = round(rps / base, 3)
        results[f"pipeline_{pipeline}"] = row
    client.flushall()
    client.close()
    return results


async def _bench_library(url: str, decisions: int, concurrency: int) -> dict[str, float]:
    store = RedisStore(url, prefix="bench")
    await store.start()
    try:
        limiter = ApiGatewayRateLimiter(store, RateLimiterSection(default=OUT_OF_REACH))
        await limiter.start()
        trivial_sha = await store.redis.script_load(TRIVIAL)

        async def loop(worker: int, fn: Any) -> None:
            for i in range(worker, decisions, concurrency):
                await fn(i)

        async def timed(fn: Any) -> float:
            started = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(loop(w, fn) for w in range(concurrency))), timeout=120)
            return decisions / (time.perf_counter() - started)

        async def decide(i: int) -> None:
            await limiter.check(f"client-{i % 1000}")

        async def trivial(i: int) -> None:  # the same redis-py client, no limiter around it
            await store.redis.evalsha(trivial_sha, 0)

        base = await timed(trivial)
        ours = await timed(decide)
        await store.redis.flushall()
        return {"trivial_evalsha_per_s": round(base), "decisions_per_s": round(ours), "ratio": round(ours / base, 3)}
    finally:
        await store.close()


def bench_gateway(redis_url: str, seconds: int, connections: int, rounds: int) -> dict[str, Any]:
    backend_port = free_port()
    backend = backend_nginx(backend_port).start(backend_port)
    runs: dict[str, list[float]] = {"on": [], "off": []}
    p99: dict[str, list[float]] = {"on": [], "off": []}
    try:
        url = f"http://127.0.0.1:{backend_port}"
        servers = {}
        for mode in ("on", "off"):
            config = gateway_config(url, rate_limit=mode == "on", cache=False, breaker=False,
                                    limits={"requests_per_minute": 10**9, "requests_per_hour": 10**10})
            servers[mode] = GatewayServer(config, redis_url).start()
        try:
            for mode in ("on", "off"):  # warm both: connections, scripts, JIT-free but caches
                run_wrk(servers[mode].url, 1, connections, path=BENCH_PATH)
            for _ in range(rounds):
                for mode in ("on", "off"):
                    settle()
                    result = run_wrk(servers[mode].url, seconds, connections, path=BENCH_PATH)
                    if result.errors or result.bad_status:
                        raise RuntimeError(f"limiting {mode}: {result.errors} errors, {result.bad_status} bad answers")
                    runs[mode].append(result.rps)
                    p99[mode].append(result.p99_ms)
        finally:
            for server in servers.values():
                server.stop()
    finally:
        backend.stop()
    on, off = statistics.median(runs["on"]), statistics.median(runs["off"])
    return {"limiting_on_rps": round(on), "limiting_off_rps": round(off), "on_off_ratio": round(on / off, 3),
            "p99_ms_on": round(statistics.median(p99["on"]), 2), "p99_ms_off": round(statistics.median(p99["off"]), 2),
            "runs": runs, "seconds": seconds, "connections": connections}


def run(seconds: int = 5, connections: int = 32, rounds: int = 3, requests: int = 100_000) -> dict[str, Any]:
    for tool in ("redis-server", "redis-benchmark", "nginx", "wrk"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (tests/perf/setup.sh)")
    with RedisProcess() as server:
        return {
            "script": bench_script(server.port, requests, 50),
            "library": asyncio.run(_bench_library(server.url, requests // 5, 32)),
            "gateway": bench_gateway(server.url, seconds, connections, rounds),
        }


def report(results: dict[str, Any]) -> str:
    lines = ["Rate limiting, same-run figures on this machine", ""]
    for name, row in results["script"].items():
        lines.append(f"redis-benchmark EVALSHA, {name.replace('_', ' ')} (50 clients):")
        lines.append(f"  trivial script            {row['trivial_evalsha_per_s']:>10.0f} calls/s")
        lines.append(f"  ratelimit, minute+hour    {row['seed_default_per_s']:>10.0f} decisions/s"
                     f"   ratio {row['seed_default_ratio']:.2f}")
        lines.append(f"  ratelimit, all 5 limits   {row['every_limit_per_s']:>10.0f} decisions/s"
                     f"   ratio {row['every_limit_ratio']:.2f}")
    lib = results["library"]
    lines.append("ApiGatewayRateLimiter.check through RedisStore (32 concurrent callers, 1,000 clients):")
    lines.append(f"  redis-py EVALSHA of the trivial script {lib['trivial_evalsha_per_s']}/s,"
                 f" limiter decisions {lib['decisions_per_s']}/s,"
                 f" ratio {lib['ratio']:.2f}")
    gw = results["gateway"]
    lines.append(f"gateway, wrk -t1 -c{gw['connections']} {gw['seconds']}s, median of {len(gw['runs']['on'])} A/B rounds:")
    lines.append(f"  limiting on  {gw['limiting_on_rps']:>7} req/s  p99 {gw['p99_ms_on']} ms")
    lines.append(f"  limiting off {gw['limiting_off_rps']:>7} req/s  p99 {gw['p99_ms_off']} ms")
    lines.append(f"  on/off ratio {gw['on_off_ratio']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100_000, help="redis-benchmark calls per figure")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args(argv)
    results = run(args.seconds, args.connections, args.rounds, args.requests)
    print(report(results))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
