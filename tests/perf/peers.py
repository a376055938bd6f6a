"""The gateway's peers on the rate-limited route, each a process of ours on a free loopback port.

- HAProxy (Debian's package): a stick table keyed by ``X-Client-ID`` counts each client's
  ``http_req_rate`` over a minute and the frontend denies 429 above the limit. One thread, as the
  nginx proxy has one worker: the C proxies are compared per core.
- nginx with ``limit_req`` keyed by ``$http_x_client_id`` (its own leaky bucket, answering 429).
- The seed's Python pattern (``tests/perf/seed_pattern.py``): FastAPI, one Redis script per request,
  httpx to the backend, under uvicorn.

HAProxy's table and nginx's zone live in the proxy's own memory: one instance's limits, not a
fleet's. The gateway and the seed pattern count in Redis, which every replica shares.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from tests.perf.servers import Nginx
from tests.support import ROOT, wait_for

_HAPROXY = """
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend limited
    bind 127.0.0.1:{port}
    stick-table type string len 64 size 100k expire 60s store http_req_rate(60s)
    http-request track-sc0 req.hdr(X-Client-ID)
    http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {limit} }}
    default_backend origin
backend origin
    server backend 127.0.0.1:{backend_port}
"""

# limit_req counts in requests per second or minute; {rate} is e.g. "1000000r/s" or "2r/m".
_NGINX_LIMITED = """
    limit_req_zone $http_x_client_id zone=perclient:10m rate={rate};
    limit_req_status 429;
    upstream limited_origin {{
        server 127.0.0.1:{backend_port};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            limit_req zone=perclient{burst} nodelay;
            proxy_pass http://limited_origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


def _answers(url: str) -> bool:
    httpx.get(url, timeout=1)
    return True


class _ChildProcess:
    """A contestant run as a child process on a loopback port; ``stop_signal`` asks it to finish."""

    stop_signal = signal.SIGTERM

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class HAProxy(_ChildProcess):
    """One haproxy in the foreground (``-db``), its config in a temp dir of its own."""

    stop_signal = signal.SIGUSR1  # soft stop: finish, then exit

    def __init__(self, port: int, backend_port: int, limit: int) -> None:
        exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(exe).exists():
            raise RuntimeError("haproxy is not installed: run tests/perf/setup.sh (apt-get install haproxy)")
        super().__init__(port)
        self.exe = exe
        self.dir = Path(tempfile.mkdtemp(prefix="apigw-perf-haproxy-"))
        self.conf = self.dir / "haproxy.cfg"
        self.conf.write_text(_HAPROXY.format(port=port, backend_port=backend_port, limit=limit))

    def start(self) -> HAProxy:
        with open(self.dir / "haproxy.log", "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([self.exe, "-db", "-f", str(self.conf)], stdout=subprocess.DEVNULL,
                                         stderr=log)
        wait_for(lambda: _answers(self.url + "/"), timeout=10, what=f"haproxy on {self.port}")
        return self

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def nginx_limited(port: int, backend_port: int, rate: str, burst: int) -> Nginx:
    burst_option = f" burst={burst}" if burst else ""
    return Nginx("limited", _NGINX_LIMITED.format(port=port, backend_port=backend_port, rate=rate, burst=burst_option))


class SeedPattern(_ChildProcess):
    """``python -m tests.perf.seed_pattern``: FastAPI middleware + one Redis script + httpx."""

    def __init__(self, port: int, backend_url: str, redis_url: str, limit: int, prefix: str) -> None:
        super().__init__(port)
        self.args = [backend_url, str(port), redis_url, str(limit), prefix]

    def start(self) -> SeedPattern:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.perf.seed_pattern", *self.args], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: httpx.get(self.url + "/_ready", headers={"X-Client-ID": "probe"}, timeout=1)
                 .status_code < 500, timeout=20, what=f"the seed pattern on {self.port}")
        return self

