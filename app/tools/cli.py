"""``python -m app``: serve, demo, check-config, backend, fleet."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

import uvicorn

from app.config import ConfigError, GatewayConfig, load_config, parse_config
from app.edge.listener import listeners, uvicorn_config
from app.edge.listener import run as run_listeners
from app.edge.workers import refusal, serve_workers, worker_count
from app.gateway import Gateway
from app.reload import ConfigFile
from app.store.script_sources import ScriptsMissing

EXIT_BAD_CONFIG = 2


def _uvicorn_config(app: Gateway, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    return uvicorn_config(app, host, port, log_level=log_level)


def _load_or_exit(path: str | None) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None


def _exit_if_cannot_listen(host: str, port: int) -> None:
    """Refuse a port that is taken with a message that says which option moves it: uvicorn's own
    is a bare "[Errno 98]". (The check and uvicorn's bind are a moment apart; a race there still
    gets uvicorn's message.)"""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        print(f"error: cannot listen on {host}: {error.strerror}; check --host", file=sys.stderr)
        raise SystemExit(1) from None
    with socket.socket(family, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                print(f"error: port {port} on {host} is busy ({error.strerror}); choose another with --port",
                      file=sys.stderr)
            else:
                print(f"error: cannot listen on {host} port {port} ({error.strerror}); check --host and --port",
                      file=sys.stderr)
            raise SystemExit(1) from None


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load_or_exit(args.config)
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    if (refused := refusal(config, args.workers)) is not None:
        print(f"serve: {refused}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    _exit_if_cannot_listen(host, port)
    if not config.router.routes:
        given = args.config or os.environ.get("API_GATEWAY_CONFIG")
        print(f"serve: {given or 'no config file'}: starting with 0 routes, so every request answers 404. "
              "Routes come from a config file (--config FILE or API_GATEWAY_CONFIG) or the admin API; "
              "`python -m app demo` runs a gateway with routes.", file=sys.stderr, flush=True)
    if args.workers > 1:
        return serve_workers(config, args.config, host, port, args.workers, args.log_level)
    # SIGHUP (and POST /_gateway/config/reload) read the same file again (app/reload.py).
    gateway = Gateway(config, ConfigFile(args.config))
    servers = listeners(gateway, host, port, log_level=args.log_level)
    try:
        run_listeners(servers)  # the gateway's start-up ends with gc.freeze() (app/edge/server.py, EdgeApp)
    except KeyboardInterrupt:  # uvicorn stopped cleanly, then raises Ctrl-C again: no traceback
        pass
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_or_exit(args.file)
    store = f"redis {config.redis.url}" if config.redis.url else "memory store"
    print(f"ok: {args.file}: {len(config.router.routes)} route(s), {store}")
    return 0


async def _run_demo(host: str, port: int, admin_token: str | None) -> None:
    from app.tools.demo import start_backend

    agents, agents_port = await start_backend("agent-service")
    threads, threads_port = await start_backend("thread-service")
    a, b = f"http://127.0.0.1:{agents_port}", f"http://127.0.0.1:{threads_port}"
    raw = {
        "admin": {"token": admin_token},
        "router": {"routes": [
            {"path": "/api/v1/agents", "method": "GET", "target": a},
            {"path": "/api/v1/agents/{id}", "method": ["GET", "PUT", "DELETE"], "target": a},
            {"path": "/api/v1/threads", "method": "POST", "target": b},
            {"path": "/demo/*", "targets": [{"url": a, "weight": 3}, {"url": b, "weight": 1}],
             # Not cached, so that each request shows which backend the 3:1 weights picked.
             "strip_prefix": True, "timeout": {"read": 1.0}, "cache": {"enabled": False}},
            {"path": "/limited/*", "target": a, "strip_prefix": True, "cache": {"enabled": False},
             "rate_limit": {"requests_per_minute": 5}},
            {"path": "/cached/*", "target": b, "strip_prefix": True, "cache": {"enabled": True, "ttl": 30}},
        ]},
        # The demo's clients are on this machine: let them name themselves with X-Client-ID.
        "rate_limiter": {"client_id_trusted_from": ["127.0.0.0/8", "::1"]},
    }
    config = parse_config(raw, os.environ, "demo")
    server = uvicorn.Server(_uvicorn_config(Gateway(config), host, port))
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if serving.done():
        await serving
        return
    bound = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://{host}:{bound}"
    token = config.admin.token
    if token:
        admin = (f"Status page: {base}/_gateway/#token={token} (in a browser)\n"
                 f"Admin API:   curl -H 'Authorization: Bearer {token}' {base}/_gateway/routes")
    else:
        admin = ("Status page and admin API: off. Start the demo with --admin-token TOKEN (or\n"
                 "API_GATEWAY_ADMIN_TOKEN=TOKEN) to turn them on; the status page is then\n"
                 f"{base}/_gateway/#token=TOKEN")
    print(f"""
API gateway demo on {base} (memory store), backends on {a} and {b}. Try:

  curl -i {base}/api/v1/agents
  curl -i {base}/api/v1/agents/42
  curl -i -X POST {base}/api/v1/threads -H 'content-type: application/json' -d '{{"title": "hi"}}'
  for i in 1 2 3 4; do curl -s {base}/demo/who | grep -o 'service": "[a-z-]*'; done   # 3:1 weights
  curl -i {base}/demo/slow?seconds=2      # slower than the route's 1 s timeout: 504
  curl -i {base}/nowhere                  # no route: 404
  curl -i {base}/_gateway/health
  # a rate limit: 5 requests a minute per client on /limited/*, then 429 (X-Client-ID names the client)
  for i in $(seq 7); do curl -s -o /dev/null -w '%{{http_code}} ' -H 'X-Client-ID: alice' {base}/limited/x; done; echo
  # the cache: /cached/* keeps an answer 30 s, so a MISS, then a HIT
  for i in 1 2; do curl -s -o /dev/null -D - {base}/cached/report | grep -i '^x-cache'; done

{admin}

Ctrl-C stops it.""", flush=True)
    try:
        await serving
    finally:
        await agents.cleanup()
        await threads.cleanup()


def cmd_demo(args: argparse.Namespace) -> int:
    import uvloop

    _exit_if_cannot_listen(args.host, args.port)
    try:
        uvloop.run(_run_demo(args.host, args.port, args.admin_token))
    except KeyboardInterrupt:
        pass
    return 0


async def _run_backend(name: str, host: str, port: int) -> None:
    from app.tools.demo import start_backend

    runner, bound = await start_backend(name, host, port)
    print(f"demo backend {name} on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def cmd_backend(args: argparse.Namespace) -> int:
    import uvloop

    uvloop.run(_run_backend(args.name, args.host, args.port))
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    from app.tools.fleet import FleetPlan, FleetPorts, run_fleet

    # --free-ports: a free port for each one not given.
    given = (args.port, args.replica_port, args.backend_port, args.redis_port)
    defaults = FleetPorts.free() if args.free_ports else FleetPorts()
    ports = FleetPorts(*(default if port is None else port for port, default in zip(
        given, (defaults.balancer, defaults.first_replica, defaults.first_backend, defaults.redis), strict=True)))
    token = args.admin_token or os.environ.get("API_GATEWAY_ADMIN_TOKEN") or None
    plan = FleetPlan(replicas=args.replicas, host=args.host, ports=ports,
                     redis_url=args.redis_url or os.environ.get("API_GATEWAY_REDIS_URL") or os.environ.get("REDIS_URL"),
                     redis_cluster=args.redis_cluster, use_nginx=not args.no_nginx)
    if token:
        plan.admin_token = token
    return run_fleet(plan)


def cmd_state(args: argparse.Namespace) -> int:
    from app.tools.state import OVERVIEW, read_state

    logging.getLogger("apigw").setLevel(logging.ERROR)  # its own message says what went wrong
    config = _load_or_exit(args.config)
    # A cluster node's URL is enough: the store finds the cluster from it. A Sentinel group is
    # asked for its master (unless --redis-url names a server).
    url = args.redis_url or (None if config.redis.sentinel else
                             config.redis.url or next(iter(config.redis.cluster_nodes or ()), None))
    if url is not None and "://" not in url:
        url = f"redis://{url}"
    if not url and config.redis.sentinel is None:
        print("state: no Redis configured (--redis-url, API_GATEWAY_REDIS_URL, redis.url, redis.cluster_nodes "
              "or redis.sentinel); the memory store lives inside one gateway process: ask its admin API",
              file=sys.stderr)
        return 1
    wanted = list(OVERVIEW) if args.section == "all" else [args.section]
    return asyncio.run(read_state(url, config, args.prefix or config.redis.prefix, wanted, args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="A distributed API gateway on Redis.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: $API_GATEWAY_CONFIG, else built-in defaults)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--workers", type=worker_count, default=1, metavar="N|auto",
                       help="worker processes on the one port (default 1; auto: one per core); "
                            "more than 1 needs Redis")
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="the gateway on the memory store with two demo backends",
                          description="The gateway on the memory store with two demo backends; it prints "
                                      "curl commands to try. The admin API and the status page are off "
                                      "unless --admin-token (or API_GATEWAY_ADMIN_TOKEN) gives a token.")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080, help="(default 8080) 0 picks a free port")
    demo.add_argument("--admin-token", help="turns the admin API and the status page on, with this token "
                                            "(default: $API_GATEWAY_ADMIN_TOKEN, else off)")
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("check-config", help="validate a config file: exit 0 when good, 2 when not")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    fleet = sub.add_parser("fleet", help="Redis, demo backends, N replicas and nginx in front, as local processes")
    fleet.add_argument("--replicas", type=int, default=3)
    fleet.add_argument("--host", default="127.0.0.1")
    fleet.add_argument("--port", type=int, help="(default 8080) the load balancer's (nginx) port")
    fleet.add_argument("--replica-port", type=int, help="(default 8081) the first replica's port; the next ones follow")
    fleet.add_argument("--backend-port", type=int, help="(default 9001) the first demo backend's port")
    fleet.add_argument("--redis-port", type=int, help="(default 6390) the port of the Redis started here")
    fleet.add_argument("--free-ports", action="store_true", help="a free port for each of these not given (the tests)")
    fleet.add_argument("--redis-url", help="use this Redis (default: $API_GATEWAY_REDIS_URL or $REDIS_URL, "
                                           "else a redis-server started here)")
    fleet.add_argument("--admin-token", help="the admin API's token (default: $API_GATEWAY_ADMIN_TOKEN, "
                                             "else the demo's)")
    fleet.add_argument("--redis-cluster", action="store_true",
                       help="start a Redis Cluster of 3 masters and 3 replicas (ports --redis-port to +5) instead of one Redis")
    fleet.add_argument("--no-nginx", action="store_true", help="no load balancer, even when nginx is installed")
    fleet.set_defaults(func=cmd_fleet)

    state = sub.add_parser("state", help="the fleet's shared state in Redis, for people (reads only)")
    state.add_argument("section", nargs="?", default="all",
                       help="all (default), config, cache, clients, ratelimits, circuits, health, client <id>")
    state.add_argument("client_id", nargs="?", help="with 'client': the client id")
    state.add_argument("--config", help="config file (for redis.url and redis.prefix)")
    state.add_argument("--redis-url", help="default: API_GATEWAY_REDIS_URL, REDIS_URL or the config's redis section "
                                           "(url, cluster_nodes or sentinel)")
    state.add_argument("--prefix", help="key prefix (default: the config's redis.prefix, apigw)")
    state.add_argument("--json", action="store_true", help="JSON instead of text")
    state.set_defaults(func=cmd_state)

    backend = sub.add_parser("backend", help="one demo backend (app/tools/demo.py) on its own, as the compose demo runs it")
    backend.add_argument("--name", default="backend")
    backend.add_argument("--host", default="127.0.0.1")
    backend.add_argument("--port", type=int, default=9001, help="0 picks a free port")
    backend.set_defaults(func=cmd_backend)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ScriptsMissing as error:  # never serve with the scripts (and so the limits) missing
        print(f"error: {error}", file=sys.stderr)
        return 1


