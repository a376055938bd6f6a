"""``python -m app fleet``: the compose demo without Docker, as local processes.

Redis (unless one is given), the two demo backends, N gateway replicas (``python -m app serve``)
and, when nginx is installed, an nginx load balancer in front of them. Every child runs in a process
group of the fleet's own, so that Ctrl-C in the terminal reaches only the fleet, which then stops
the children in order (balancer, replicas, backends, Redis) and finally kills whatever is left in
their group: nothing outlives it. On Linux each child also gets SIGTERM if the fleet itself dies.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from app.config import parse_config
from app.tools.demo import demo_routes

DEMO_ADMIN_TOKEN = "demo-admin-token"
STOP_GRACE = 10.0    # seconds a child gets to stop after SIGTERM before the group is killed
DRAIN_TIMEOUT = 30.0  # a replica's server.drain_timeout (the default): what a rolling restart waits
START_TIMEOUT = 60.0  # seconds the whole fleet gets to come up


class FleetError(Exception):
    """The fleet cannot start; the message says why and what to do."""


@dataclass
class FleetPorts:
    balancer: int = 8080
    first_replica: int = 8081
    first_backend: int = 9001
    redis: int = 6390

    @classmethod
    def free(cls) -> FleetPorts:
        return cls(0, 0, 0, 0)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    # How it was started, to start it again (a rolling restart).
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None


@dataclass
class FleetPlan:
    replicas: int = 3
    host: str = "127.0.0.1"
    ports: FleetPorts = field(default_factory=FleetPorts)
    redis_url: str | None = None
    # A Redis Cluster of 3 masters and 3 replicas started here (ports redis .. redis + 5) instead of one Redis.
    redis_cluster: bool = False
    admin_token: str = DEMO_ADMIN_TOKEN
    use_nginx: bool = True


def _claim_ports(wanted: list[tuple[str, int, str]]) -> list[int]:
    """For each (host, port, the option that sets it): the port, when it can be bound (0: any free
    port); else a FleetError naming every busy one and its option."""
    claimed, busy = [], []
    for host, port, option in wanted:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as error:
                busy.append(f"port {port} on {host} is busy ({error.strerror}; {option} moves it)")
                continue
            claimed.append(int(sock.getsockname()[1]))
    if busy:
        raise FleetError("; ".join(busy) + ". Choose other ports with those options, or take free ones "
                         "with --free-ports")
    return claimed


def _bind_free(host: str, port: int) -> int:
    """One port of the Redis Cluster's (a node's or its bus port), checked as _claim_ports checks."""
    return _claim_ports([(host, port, "--redis-port")])[0]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the fleet dies, whatever killed it (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def find_nginx() -> str | None:
    # /usr/sbin is not on every user's PATH.
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_conf(workdir: Path, host: str, port: int, replica_ports: list[int], replica_host: str) -> str:
    # proxy_read_timeout: the replicas time out each route's backend themselves (JSON 504); nginx's
    # limit, far above their default 30 s, is only for a replica that hangs (deploy/nginx.conf).
    # max_fails=0: a replica that refuses a connection is never marked down; the request goes on to
    # the next one (proxy_next_upstream error), at the cost of one refused loopback connect. Marked
    # down for a fail_timeout instead, the replicas of a rolling restart, each ready again within
    # about a second, were at times all marked down at once: nginx then answered 502 "no live upstreams".
    servers = "\n".join(f"        server {replica_host}:{p} max_fails=0;" for p in replica_ports)
    temp = "\n".join(f"    {kind}_temp_path {workdir}/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# Written by `python -m app fleet`; the compose demo's is deploy/nginx.conf.
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    server_tokens off;
{temp}
    upstream gateways {{
{servers}
        keepalive 32;
        keepalive_timeout 60s;
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            client_max_body_size 0;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


def fleet_config(redis_url: str, backend_a: str, backend_b: str, admin_token: str,
                 host: str, cluster_nodes: list[str] | None = None) -> dict[str, Any]:
    """The replicas' config: deploy/gateway.yaml's, with local addresses."""
    return {
        "server": {"host": host},
        "redis": {"cluster_nodes": cluster_nodes} if cluster_nodes else {"url": redis_url},
        "admin": {"token": admin_token},
        "rate_limiter": {
            "default": {"requests_per_minute": 600, "requests_per_hour": 20000},
            # nginx in front: its X-Forwarded-For names the client.
            "trusted_proxies": ["127.0.0.1"],
            # The walk-through's clients (Alice, Bob) are on this machine: their X-Client-ID is believed.
            "client_id_trusted_from": ["127.0.0.0/8", "::1"],
        },
        "cache": {"ttl": 60},
        "circuit_breaker": {"default": {"failure_threshold": 5, "recovery_timeout": 30, "success_threshold": 2}},
        "router": {"routes": demo_routes(backend_a, backend_b)},
    }


class Fleet:
    def __init__(self, plan: FleetPlan) -> None:
        self.plan = plan
        self.workdir = Path(tempfile.mkdtemp(prefix="apigw-fleet-"))
        self.children: list[Child] = []
        self.pgids: list[int] = []
        self.stopping = threading.Event()
        self.restart_requested = threading.Event()
        self.redis_url = plan.redis_url or ""
        self.balancer_url: str | None = None
        self.redis_port: int | None = None
        self.cluster_nodes: list[str] = []

    # -- children -------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], url: str = "", env: dict[str, str] | None = None) -> Child:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            kwargs: dict[str, Any] = dict(stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          env=env, preexec_fn=_die_with_parent)
            try:
                # The first child starts the group; the others join it.
                proc = subprocess.Popen(argv, process_group=self.pgids[0] if self.pgids else 0, **kwargs)
            except OSError:
                if not self.pgids:
                    raise
                # The group is gone (its members all exited): this child starts another one.
                proc = subprocess.Popen(argv, process_group=0, **kwargs)
        pgid = os.getpgid(proc.pid)
        if pgid not in self.pgids:
            self.pgids.append(pgid)
        child = Child(name, proc, log, url, argv, env)
        self.children.append(child)
        return child

    def _wait_until(self, child: Child, ready: Any, deadline: float) -> None:
        while True:
            if self.stopping.is_set():
                raise FleetError("stopped while starting")
            code = child.proc.poll()
            if code is not None:
                tail = child.log.read_text(errors="replace")[-2000:]
                raise FleetError(f"{child.name} exited with code {code} while starting:\n{tail}")
            try:
                if ready():
                    return
            except (OSError, httpx.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise FleetError(f"{child.name} did not get ready in time; its log: {child.log}")
            time.sleep(0.1)

    @staticmethod
    def _http_ok(url: str) -> bool:
        return httpx.get(url, timeout=1.0).status_code == 200

    # -- start ------------------------------------------------------------------------------------

    def start(self) -> None:
        plan, ports, host = self.plan, self.plan.ports, self.plan.host
        if plan.replicas < 1:
            raise FleetError("--replicas must be at least 1")
        nginx = find_nginx() if plan.use_nginx else None
        # Every port is checked before anything starts, so that busy ones fail fast, all named.
        wanted = [(host, 0 if ports.first_replica == 0 else ports.first_replica + i, "--replica-port")
                  for i in range(plan.replicas)]
        wanted += [(host, 0 if ports.first_backend == 0 else ports.first_backend + i, "--backend-port")
                   for i in range(2)]
        if nginx:
            wanted.append((host, ports.balancer, "--port"))
        if not self.redis_url and not plan.redis_cluster:  # a cluster checks its six ports itself
            wanted.append(("127.0.0.1", ports.redis, "--redis-port"))
        claimed = _claim_ports(wanted)
        replica_ports, backend_ports = claimed[:plan.replicas], claimed[plan.replicas:plan.replicas + 2]
        rest = claimed[plan.replicas + 2:]
        balancer_port = rest.pop(0) if nginx else None
        deadline = time.monotonic() + START_TIMEOUT

        if plan.redis_cluster:
            self._start_redis_cluster(deadline)
        elif not self.redis_url:
            self._start_redis(rest.pop(0), deadline)
        env = {k: v for k, v in os.environ.items() if k not in ("API_GATEWAY_CONFIG", "API_GATEWAY_REDIS_URL", "REDIS_URL")}
        python = [sys.executable, "-m", "app"]
        backends = []
        for name, port in zip(("backend-a", "backend-b"), backend_ports, strict=True):
            url = f"http://{host}:{port}"
            backends.append(self._spawn(name, [*python, "backend", "--name", name, "--host", host, "--port", str(port)],
                                        url, env))
        config = fleet_config(self.redis_url, backends[0].url, backends[1].url, plan.admin_token, host,
                              self.cluster_nodes)
        parse_config(config, {}, "fleet config")  # refuse a bad config here, not in N replicas
        config_path = self.workdir / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        replicas = [self._spawn(f"replica-{i + 1}", [*python, "serve", "--config", str(config_path), "--host", host,
                                                     "--port", str(port), "--log-level", "warning"],
                                f"http://{host}:{port}", env)
                    for i, port in enumerate(replica_ports)]
        for child in backends:
            self._wait_until(child, lambda c=child: self._http_ok(f"{c.url}/__hits"), deadline)
        for child in replicas:
            self._wait_until(child, lambda c=child: self._http_ok(f"{c.url}/_gateway/ready"), deadline)
        if nginx and balancer_port is not None:
            self._start_nginx(nginx, balancer_port, replica_ports, deadline)

    def _start_redis(self, port: int, deadline: float) -> None:
        exe = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/local/bin")
        if exe is None:
            raise FleetError("no Redis: install redis-server (apt-get install redis-server) "
                             "or give one with --redis-url / REDIS_URL")
        data = self.workdir / "redis"
        data.mkdir()
        child = self._spawn("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(data), "--daemonize", "no",
                                      "--loglevel", "warning"])
        self.redis_port = port
        self.redis_url = f"redis://127.0.0.1:{port}/0"

        def pings() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        self._wait_until(child, pings, deadline)

    def _start_nginx(self, nginx: str, port: int, replica_ports: list[int], deadline: float) -> None:
        workdir = self.workdir / "nginx"
        workdir.mkdir()
        # As root, nginx's workers run as nobody and must reach their temp folders.
        os.chmod(self.workdir, 0o755)
        os.chmod(workdir, 0o755)
        conf = workdir / "nginx.conf"
        text = nginx_conf(workdir, self.plan.host, port, replica_ports, self.plan.host)
        # A build without some module does not know its temp path directive: drop those it refuses.
        for _ in range(4):
            conf.write_text(text)
            check = subprocess.run([nginx, "-t", "-q", "-p", str(workdir), "-e", str(workdir / "error.log"),
                                    "-c", str(conf)], capture_output=True, text=True, timeout=30)
            unknown = [kind for kind in ("fastcgi", "uwsgi", "scgi")
                       if f'unknown directive "{kind}_temp_path"' in check.stderr]
            if check.returncode == 0 or not unknown:
                break
            text = "\n".join(line for line in text.splitlines()
                             if not any(f"{kind}_temp_path" in line for kind in unknown))
        if check.returncode != 0:
            raise FleetError(f"nginx refused its config {conf}:\n{check.stderr}")
        url = f"http://{self.plan.host}:{port}"
        child = self._spawn("nginx", [nginx, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)],
                            url)
        self._wait_until(child, lambda: self._http_ok(f"{url}/_gateway/health"), deadline)
        self.balancer_url = url

    # -- run and stop -------------------------------------------------------------------------

    def watch(self) -> None:
        """Until stopped: say when a child exits (the others go on, as a fleet does)."""
        reported: set[int] = set()
        while not self.stopping.wait(0.5):
            if self.restart_requested.is_set():
                self.restart_requested.clear()
                self.rolling_restart()
            for child in self.children:
                code = child.proc.poll()
                if code is not None and child.proc.pid not in reported:
                    reported.add(child.proc.pid)
                    print(f"fleet: {child.name} exited with code {code} (log: {child.log})", flush=True)
            if len(reported) == len(self.children):
                print("fleet: every process has exited", flush=True)
                return

    def rolling_restart(self) -> None:
        """Each replica in turn: SIGTERM (it drains: readiness false, no new connections, its requests
        in flight finish), then the same command again, ready before the next one stops. The balancer
        sends new requests to the others meanwhile (a refused connection goes to the next replica)."""
        print("fleet: rolling restart", flush=True)
        for old in [c for c in self.children if c.name.startswith("replica-")]:
            if self.stopping.is_set():
                return
            old.proc.send_signal(signal.SIGTERM)
            try:
                code = old.proc.wait(timeout=STOP_GRACE + DRAIN_TIMEOUT)
            except subprocess.TimeoutExpired:
                old.proc.kill()
                code = old.proc.wait()
            self.children.remove(old)
            new = self._spawn(old.name, old.argv, old.url, old.env)
            try:
                self._wait_until(new, lambda c=new: self._http_ok(f"{c.url}/_gateway/ready"),
                                 time.monotonic() + START_TIMEOUT)
            except FleetError as error:
                print(f"fleet: rolling restart stopped: {error}", flush=True)
                return
            print(f"fleet: {old.name} restarted (exit code {code}, now pid {new.proc.pid})", flush=True)
        print("fleet: rolling restart done", flush=True)

    def stop(self) -> None:
        """Stop the children in reverse start order; then kill whatever is left in their groups.
        Their logs stay, for what went wrong."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                try:
                    # nginx: SIGQUIT is its graceful stop; the others stop gracefully on SIGTERM.
                    child.proc.send_signal(signal.SIGQUIT if child.name == "nginx" else signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                child.proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        for pgid in self.pgids:
            if pgid == os.getpgrp():  # never the fleet's own (the shell's) group
                continue
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    # -- telling people -----------------------------------------------------------------------

    def _start_redis_cluster(self, deadline: float) -> None:
        """Six cluster nodes on consecutive ports (their bus ports 10000 above), made a cluster of 3
        masters with a replica each; a lost master's replica takes over in about 2 s."""
        exe = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/local/bin")
        cli = shutil.which("redis-cli") or shutil.which("redis-cli", path="/usr/sbin:/usr/local/bin")
        if exe is None or cli is None:
            raise FleetError("no Redis: install redis-server (apt-get install redis-server)")
        first = self.plan.ports.redis or _free_cluster_base()
        if first + 5 + 10000 > 65535:
            raise FleetError(f"--redis-port {first}: a cluster needs 6 ports whose bus ports (+10000) stay below 65536")
        ports = _claim_ports([("127.0.0.1", port, "--redis-port") for port in range(first, first + 6)])
        for port in ports:
            _bind_free("127.0.0.1", port + 10000)
        nodes = []
        for port in ports:
            data = self.workdir / f"redis-{port}"
            data.mkdir()
            nodes.append(self._spawn(f"redis-{port}", [
                exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(data), "--daemonize", "no", "--loglevel", "warning",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
                # One lost shard must not stop the others.
                "--cluster-require-full-coverage", "no"]))
        for port, child in zip(ports, nodes, strict=True):
            self._wait_until(child, lambda p=port: _redis_says(p, b"PING\r\n").startswith(b"+PONG"), deadline)
        addresses = [f"127.0.0.1:{port}" for port in ports]
        made = subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
                              capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()))
        if made.returncode != 0:
            raise FleetError(f"redis-cli --cluster create failed:\n{made.stdout[-1500:]}{made.stderr[-500:]}")
        self._wait_until(nodes[0], lambda: all(b"cluster_state:ok" in _redis_says(p, b"CLUSTER INFO\r\n")
                                               for p in ports), deadline)
        self.redis_port = ports[0]
        self.cluster_nodes = addresses
        self.redis_url = f"redis://127.0.0.1:{ports[0]}/0"

    def urls(self) -> dict[str, str]:
        replicas = [c.url for c in self.children if c.name.startswith("replica-")]
        out = {"GW": self.balancer_url or replicas[0]}
        out.update({f"R{i + 1}": url for i, url in enumerate(replicas)})
        # backend-a, backend-b: A, B
        out.update({c.name.removeprefix("backend-").upper(): c.url for c in self.children
                    if c.name.startswith("backend-")})
        return out

    def redis_cli(self) -> str:
        if self.cluster_nodes:  # -c: redis-cli follows the cluster's redirections
            return f"redis-cli -c -p {self.redis_port}"
        if self.redis_port is not None:
            return f"redis-cli -p {self.redis_port}"
        return f"redis-cli -u {self.redis_url}"

    def banner(self) -> str:
        urls = self.urls()
        replicas = [c for c in self.children if c.name.startswith("replica-")]
        backends = [c for c in self.children if c.name.startswith("backend-")]
        own = " (started here)" if self.redis_port is not None else ""
        where = (f"a Redis Cluster of 3 masters and 3 replicas, {self.cluster_nodes[0]} to {self.cluster_nodes[-1]}"
                 if self.cluster_nodes else f"Redis {self.redis_url}")
        count = f"{len(replicas)} replica{'s' if len(replicas) > 1 else ''}"
        lines = ["", f"API gateway fleet: {count} on {where}{own}", ""]
        if self.balancer_url:
            lines.append(f"  load balancer  {self.balancer_url}   nginx, round robin over the replicas")
        else:
            why = "nginx is not installed: apt-get install nginx-light" if self.plan.use_nginx else "--no-nginx"
            lines.append(f"  load balancer  none ({why}); GW is replica 1")
        lines += [f"  {c.name:<13}  {c.url}" for c in replicas + backends]
        lines += [f"  status page    {urls['GW']}/_gateway/#token={self.plan.admin_token}",
                  f"  logs           {self.workdir}", "",
                  "In another shell (these are the README's walkthrough; admin token: "
                  f"{self.plan.admin_token}):", ""]
        exports = " ".join(f"{k}={v}" for k, v in urls.items())
        lines.append(f"  {exports} REDIS=\"{self.redis_cli()}\"")
        every_replica = " ".join(f"${k}" for k in urls if k.startswith("R"))
        walkthrough = WALKTHROUGH.replace("$R1 $R2 $R3", every_replica).replace(
            "then a HIT on replicas 2 and 3", _hits_on(len(replicas)))
        lines += [f"  {line}" if line else "" for line in walkthrough.strip("\n").splitlines()]
        lines += ["", f"fleet ready: {urls['GW']}",
                  f"Ctrl-C stops the fleet; kill -USR1 {os.getpid()} restarts the replicas one by one.", ""]
        return "\n".join(lines)


def _hits_on(replicas: int) -> str:
    """Where the walkthrough's cache block sees its HITs, for this many replicas."""
    if replicas == 1:
        return "then a HIT when run again"
    if replicas == 2:
        return "then a HIT on replica 2"
    return f"then a HIT on replicas 2 {'and' if replicas == 3 else 'to'} {replicas}"


# What to try: the first command of each part of the README's "Run it as a fleet" (a test checks
# that each line is there, word for word).
WALKTHROUGH = """
# The balancer takes turns over the replicas, each replica over the backends:
for i in 1 2 3 4 5 6; do curl -s $GW/api/who | grep -o '"service": "[a-z-]*"'; done | sort | uniq -c
# A shared rate limit: 5 a minute for each client on /limited, counted once for the fleet:
for i in $(seq 7); do curl -s -o /dev/null -w '%{http_code} ' -H 'X-Client-ID: alice' $GW/limited/x; done; echo
# A shared cache: a MISS on replica 1, then a HIT on replicas 2 and 3:
for r in $R1 $R2 $R3; do curl -s -o /dev/null -D - $r/cached/report | grep -i '^x-cache'; done
# A circuit opened for the fleet: 3 failures through any replicas, then every replica refuses:
for i in 1 2 3; do curl -s -o /dev/null -w '%{http_code} ' $GW/fragile/status/500; done; echo
for r in $R1 $R2 $R3; do curl -s -o /dev/null -w '%{http_code} ' $r/fragile/ok; done; echo
"""


def _redis_says(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(command)
        return sock.recv(4096)


def _free_cluster_base() -> int:
    """With --free-ports: 6 consecutive free ports whose bus ports are free too."""
    for base in range(20000, 30000, 7):
        try:
            for port in range(base, base + 6):
                _bind_free("127.0.0.1", port)
                _bind_free("127.0.0.1", port + 10000)
        except FleetError:
            continue
        return base
    raise FleetError("no 6 consecutive free ports for a Redis Cluster between 20000 and 30000")


def run_fleet(plan: FleetPlan) -> int:
    # The readiness polls are no news to the person at the terminal.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    fleet = Fleet(plan)

    def on_signal(signum: int, _frame: Any) -> None:
        fleet.stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, lambda _s, _f: fleet.restart_requested.set())
    try:
        try:
            fleet.start()
        except FleetError as error:
            if fleet.stopping.is_set():
                return 0
            print(f"fleet: {error}", file=sys.stderr, flush=True)
            return 1
        print(fleet.banner(), flush=True)
        fleet.watch()
        print("fleet: stopping", flush=True)
        return 0
    finally:
        fleet.stop()
        if fleet.children:
            print(f"fleet: stopped; the logs stay in {fleet.workdir}", flush=True)
        else:  # nothing started: nothing to read
            shutil.rmtree(fleet.workdir, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
