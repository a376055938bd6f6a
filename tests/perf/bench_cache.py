"""Cache-hit throughput: the gateway (Redis store) against nginx's proxy_cache and the backend itself.

One run, same machine, same backend, same wrk settings for each target:
  backend   the demo backend directly (python -m app backend)
  nginx     nginx proxy_cache, answering from its cache (HIT)
  gateway   one gateway replica on Redis, answering from the cache (X-Cache: HIT)
  proxy     the same replica on a route with caching off (every request goes to the backend)
It prints requests/s and latency for each, the ratios, and per cache hit: the Redis round trips
(INFO stats total_reads_processed: a pipeline arrives in one read) and the scripts run (INFO
commandstats), before and after the gateway's run.

Run: .venv/bin/python -m tests.perf.bench_cache [--seconds 5] [--connections 32]
(needs nginx and wrk: apt-get install -y nginx-light wrk). Only loopback addresses are used, and
every load run is bounded by wrk's duration.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.support import ROOT, GatewayProcess, RedisProcess, free_port, wait_for

PATH = "/headers/bench?Content-Type=application/json"

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    proxy_cache_path {tmp}/cache levels=1:2 keys_zone=bench:10m max_size=100m inactive=10m use_temp_path=off;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def percentile(p: str) -> float:
        found = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not found:
            return float("nan")
        value, unit = float(found.group(1)), found.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {"rps": rps, "requests": total, "non_2xx": int(errors.group(1)) if errors else 0,
            "p50_ms": percentile("50"), "p99_ms": percentile("99")}


def _start_backend(port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "app", "backend", "--name", "bench", "--port", str(port)],
                            cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/__hits", timeout=1).status_code == 200,
             what="backend")
    return proc


def _start_nginx(tmp: Path, port: int, backend: int) -> subprocess.Popen[bytes]:
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, backend=backend))
    tmp.chmod(0o755)  # run as root, nginx's workers are "nobody": they must reach the cache dir
    proc = subprocess.Popen(["nginx", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/__hits", timeout=1).status_code == 200,
                 what="nginx")
    except TimeoutError:
        proc.terminate()
        proc.wait(timeout=10)
        raise
    return proc


def _backend_hits(backend: str) -> int:
    return int(httpx.get(backend + "/__hits").json().get("/headers/bench", 0))


def _reads(client: redis.Redis) -> int:
    return int(client.info("stats")["total_reads_processed"])


def _commandstats(client: redis.Redis) -> dict[str, int]:
    return {name: int(stats["calls"]) for name, stats in client.info("commandstats").items()}


def run(seconds: int = 5, connections: int = 32) -> dict[str, Any]:
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (apt-get install -y nginx-light wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="apigw-bench-"))
    backend_port, nginx_port = free_port(), free_port()
    procs: list[Any] = []
    results: dict[str, Any] = {"seconds": seconds, "connections": connections, "path": PATH}
    with RedisProcess() as server:
        try:
            tmp.chmod(0o755)
            procs.append(_start_backend(backend_port, tmp / "backend.log"))
            procs.append(_start_nginx(tmp, nginx_port, backend_port))
            backend = f"http://127.0.0.1:{backend_port}"
            # Limits too high to refuse anything: the rate-limit script still runs on every
            # request, pipelined with the cache lookup, as in production.
            limits = {"requests_per_minute": 10**9, "requests_per_hour": 10**10}
            config = {"redis": {"url": server.url}, "rate_limiter": {"default": limits}, "router": {"routes": [
                {"path": "/headers/*", "target": backend},
                {"path": "/nc/*", "target": backend, "strip_prefix": True, "cache": {"enabled": False}}]}}
            gateway = GatewayProcess(config).start()
            procs.append(gateway)

            for name, base in (("gateway", gateway.url), ("nginx", f"http://127.0.0.1:{nginx_port}")):
                httpx.get(base + PATH)  # fill the cache
                verdict = httpx.get(base + PATH).headers.get("x-cache")
                assert verdict == "HIT", f"{name} does not answer from its cache: {verdict}"

            client = redis.Redis.from_url(server.url)
            results["backend"] = wrk(backend + PATH, seconds, connections)
            results["nginx"] = wrk(f"http://127.0.0.1:{nginx_port}{PATH}", seconds, connections)
            backend_before = _backend_hits(backend)
            before, reads_before = _commandstats(client), _reads(client)
            results["gateway"] = wrk(gateway.url + PATH, seconds, connections)
            after, reads_after = _commandstats(client), _reads(client)
            results["backend_requests_during_gateway_hits"] = _backend_hits(backend) - backend_before
            results["proxy"] = wrk(gateway.url + "/nc" + PATH, seconds, connections)
            hits = results["gateway"]["requests"]
            delta = {name.removeprefix("cmdstat_"): after.get(name, 0) - before.get(name, 0) for name in after}
            delta = {name: calls for name, calls in delta.items() if calls > 0 and name != "info"}
            # Round trips: the socket reads Redis made (a pipeline arrives in one read). Scripts:
            # EVALSHA calls (rate limit + cache lookup); the commands they run inside Redis are
            # listed too but cost no network; HELLO/PING are the pool opening connections.
            results["redis_commands_during_hits"] = delta
            results["redis_scripts_per_hit"] = round(delta.get("evalsha", 0) / hits, 3)
            results["redis_round_trips_per_hit"] = round((reads_after - reads_before - 1) / hits, 3)
            client.close()
        finally:
            for proc in reversed(procs):
                if isinstance(proc, GatewayProcess):
                    proc.stop()
                else:
                    proc.terminate()
                    proc.wait(timeout=10)
            shutil.rmtree(tmp, ignore_errors=True)
    g, n, b = results["gateway"]["rps"], results["nginx"]["rps"], results["backend"]["rps"]
    results["ratios"] = {"gateway_hit/nginx_hit": round(g / n, 3), "gateway_hit/backend": round(g / b, 3),
                         "gateway_hit/gateway_proxy": round(g / results["proxy"]["rps"], 3)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    results = run(min(args.seconds, 60), min(args.connections, 256))
    for name in ("backend", "nginx", "gateway", "proxy"):
        r = results[name]
        print(f"{name:8} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
              f"non-2xx {r['non_2xx']}")
    print("ratios:", results["ratios"])
    print("redis round trips per cache hit:", results["redis_round_trips_per_hit"],
          "| scripts (EVALSHA) per hit:", results["redis_scripts_per_hit"],
          "| commands during the hit run:", results["redis_commands_during_hits"],
          "| backend requests during it:", results["backend_requests_during_gateway_hits"])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
