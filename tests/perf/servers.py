"""The processes a benchmark measures: nginx instances of our own, gateway replicas, and their CPU.

nginx runs from a config generated into a temporary directory, on free loopback ports, as a process
of ours (``daemon off``): the system's nginx config, service and port 80 are never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import ROOT, GatewayProcess, free_port, wait_for

# The direct backend's fixed answer: a small JSON document, as the figures of docs/design.md used.
BACKEND_BODY = '{"service":"bench","ok":true,"items":[1,2,3],"message":"a small fixed JSON answer"}'

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_COMMON = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
{servers}
}}
"""

_BACKEND_SERVER = """
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
"""

# A reverse proxy with a keep-alive pool to its upstream: what the gateway is compared with.
_PROXY_SERVER = """
    upstream {name} {{
{upstreams}
        keepalive 64;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
    }}
"""


def nginx_path() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat (fields 14 and 15)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _parents() -> dict[int, int]:
    """pid -> parent pid, for every process now."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(raw[raw.rindex(")") + 2:].split()[1])
    return parents


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU of these processes and all their descendants (nginx's workers, for one)."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    seen: set[int] = set()
    todo = list(pids)
    total = 0.0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            total += process_cpu_seconds(pid)
        except OSError:
            pass  # it ended between the listing and now
        todo.extend(children.get(pid, ()))
    return total


def system_busy_seconds() -> float:
    """CPU time every core spent on anything but idling, from /proc/stat (all processes)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS


class Nginx:
    """One nginx of ours: ``daemon off``, one worker, config and logs in its own temp dir."""

    def __init__(self, name: str, servers: str) -> None:
        exe = nginx_path()
        if exe is None:
            raise RuntimeError("nginx is not installed: run tests/perf/setup.sh (apt-get install nginx-light wrk)")
        self.exe = exe
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"apigw-perf-{name}-"))
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(_COMMON.format(dir=self.dir, servers=servers))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *ports: int) -> Nginx:
        self.proc = subprocess.Popen(
            [self.exe, "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in ports:
            wait_for(lambda port=port: _answers(port), timeout=10, what=f"nginx {self.name} on {port}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: the master stops its workers
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _answers(port: int) -> bool:
    httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
    return True  # any HTTP answer (even 502 from a proxy whose upstream is not up yet) means it listens


def backend_nginx(port: int) -> Nginx:
    body = BACKEND_BODY.replace("'", "\\'")
    return Nginx("backend", _BACKEND_SERVER.format(port=port, body=body))


def proxy_nginx(listeners: dict[int, list[int]]) -> Nginx:
    """One nginx with a proxy server per listening port, each to its own upstream ports."""
    servers = []
    for i, (port, upstream_ports) in enumerate(listeners.items()):
        upstreams = "\n".join(f"        server 127.0.0.1:{p};" for p in upstream_ports)
        servers.append(_PROXY_SERVER.format(name=f"up{i}", upstreams=upstreams, port=port))
    return Nginx("proxy", "".join(servers))


class GatewayServer(GatewayProcess):
    """A replica as ``python -m app serve``, from ``source`` (this checkout, or an exported older
    commit for an A/B run), with an environment that cannot point it at another Redis or config."""

    def __init__(self, config: dict[str, Any], redis_url: str, port: int | None = None,
                 source: Path = ROOT, workers: int = 1) -> None:
        super().__init__(config, port=port or free_port())
        self.source = source
        self.workers = workers
        self.env = {k: v for k, v in self.env.items() if not k.startswith("API_GATEWAY_") and k != "REDIS_URL"}
        self.env["API_GATEWAY_REDIS_URL"] = redis_url

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "app", "serve", "--config", str(self.config_path), "--port", str(self.port),
                "--log-level", "warning", *(["--workers", str(self.workers)] if self.workers > 1 else [])]

    def start(self, wait: bool = True) -> GatewayServer:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command, cwd=self.source, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            wait_for(self._healthy, timeout=30, what=f"gateway on {self.port}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def settle(seconds: float = 0.3) -> None:
    """A short pause between runs so that one run's tail does not land in the next one's counters."""
    time.sleep(seconds)
