"""Real servers for the tests: Redis processes, demo backends and gateways in threads or processes."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import httpx
from aiohttp import web
import uvicorn
import yaml

from app.tools.demo import HITS, start_backend

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class RedisProcess:
    """A redis-server of the test's own on a free port, which the test may stop and restart."""

    def __init__(self, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.exe = exe
        self.port = port or free_port()
        self.args = args  # more redis-server options (--requirepass ...)
        self.dir = tempfile.mkdtemp(prefix="apigw-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._pings, timeout=10, what=f"redis-server on {self.port}")
        return self

    def _pings(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # up (asking for a password or not)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ThreadServer:
    """An ASGI or aiohttp app served on its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class AiohttpOrigin(ThreadServer):
    """A test's own aiohttp origin on a free loopback port: a subclass adds its routes in ``routes``."""

    def __init__(self) -> None:
        super().__init__()
        self.runner: Any = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self.thread.start()
        self.port = self.run(self._start())
        return self

    async def _start(self) -> int:
        app = web.Application()
        self.routes(app)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.runner is not None:
            self.run(self.runner.cleanup())
            self.runner = None
        super().stop()


class BackendServer(ThreadServer):
    """The demo backend (app/tools/demo.py): a real HTTP server that counts the requests it gets."""

    def __init__(self, name: str = "backend", port: int = 0) -> None:
        super().__init__()
        self.name = name
        self.wanted_port = port
        self.runner: Any = None

    def start(self) -> BackendServer:
        self.thread.start()
        self.runner, self.port = self.run(start_backend(self.name, port=self.wanted_port))
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hits(self) -> dict[str, int]:
        return dict(self.runner.app[HITS])

    def reset_hits(self) -> None:
        self.runner.app[HITS].clear()

    def stop(self) -> None:
        if self.runner is not None:
            self.run(self.runner.cleanup())
            self.runner = None
        super().stop()

    def __enter__(self) -> BackendServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayThread(ThreadServer):
    """The gateway app under uvicorn in this process (fast to start; for tests of one replica)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        from app.edge.listener import admin_config, uvicorn_config
        from app.gateway import Gateway

        self.gateway = Gateway(config)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn_config(self.gateway, "127.0.0.1", self.port, loop="asyncio",
                                                    log_level="warning"))
        # With admin.listen, its listener too, in the same loop (as app/edge/listener.py serves them).
        admin = admin_config(self.gateway, loop="asyncio", log_level="warning")
        self.admin_server = uvicorn.Server(admin) if admin is not None else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        listen = self.gateway.config.admin.listen
        assert listen is not None, "no admin.listen in this gateway's config"
        return f"http://{listen.host}:{listen.port}"

    def start(self) -> GatewayThread:
        from app.edge.listener import serve

        self.thread.start()
        servers = [self.server] if self.admin_server is None else [self.server, self.admin_server]
        self.task = asyncio.run_coroutine_threadsafe(serve(servers), self.loop)
        wait_for(lambda: all(s.started for s in servers) or self.task.done(), what="gateway start")
        if self.task.done():
            self.task.result()  # raises what stopped it
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.admin_server is not None:
            self.admin_server.should_exit = True
        try:
            self.task.result(timeout=15)
        except TimeoutError:
            raise TimeoutError(f"the gateway did not stop within 15 s; its tasks:\n{self._task_stacks()}") from None
        finally:
            super().stop()

    def _task_stacks(self) -> str:
        """Where each of the loop's tasks waits: what a shutdown that hangs is waiting for."""
        async def stacks() -> str:
            out = io.StringIO()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.print_stack(file=out)
            return out.getvalue()
        try:
            return asyncio.run_coroutine_threadsafe(stacks(), self.loop).result(timeout=5)
        except Exception as error:  # the loop itself is stuck: say so rather than hide the timeout
            return f"(no stacks: {error!r})"

    def __enter__(self) -> GatewayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayProcess:
    """A gateway replica as a real process: ``python -m app serve --config FILE``."""

    def __init__(self, config: dict[str, Any], env: dict[str, str] | None = None, port: int | None = None,
                 workdir: Path | None = None, tls: Any = None, args: tuple[str, ...] = ()) -> None:
        """``tls``: with server.tls in ``config``, what the client verifies the gateway with (an
        ssl.SSLContext, as httpx's ``verify``): the URL is https:// then."""
        self.tls = tls
        self.port = port or free_port()
        self.args = args  # more of serve's options, e.g. ("--workers", "2")
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="apigw-replica-"))
        self.config_path = self.workdir / f"gateway-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.env = {**os.environ, **(env or {})}
        self.env.pop("API_GATEWAY_CONFIG", None)
        self.log_path = self.workdir / f"gateway-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}" if self.tls is not None else f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> GatewayProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--config", str(self.config_path), "--port", str(self.port),
             "--log-level", "warning", *self.args],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            wait_for(self._healthy, timeout=20, what=f"gateway replica on {self.port}")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"replica exited with {self.proc.returncode}: {self.log()}")
        return httpx.get(f"{self.url}/_gateway/health", timeout=1, verify=self.tls or True).status_code == 200

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def replicas(config: dict[str, Any], count: int, env: dict[str, str] | None = None) -> Iterator[list[GatewayProcess]]:
    """``count`` gateway processes on one config, started in parallel, stopped at the end."""
    procs = [GatewayProcess(config, env) for _ in range(count)]
    try:
        for proc in procs:
            proc.start(wait=False)
        for proc in procs:
            wait_for(proc._healthy, timeout=30, what=f"replica on {proc.port}")
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def metric_value(sample: str, **labels: str) -> float:
    """A sample's value as /_gateway/metrics exposes it (0 before its first count)."""
    from app.observability.metrics import REGISTRY

    return REGISTRY.get_sample_value(sample, labels) or 0.0
