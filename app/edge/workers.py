"""``serve --workers N``: a pre-forking parent and N worker processes on the same listening sockets.

The parent binds the data port (and ``admin.listen``'s) once and starts each worker with the bound
sockets (multiprocessing's spawn context pickles them, as uvicorn's own supervisor does); every
worker is a whole gateway running the same listeners on them, and the kernel spreads the
connections. The parent serves nothing itself: it restarts a worker that dies, forwards SIGTERM
(each worker drains, app/edge/drain.py) and SIGHUP to every worker, and exits once all have exited.
A reload through the admin API reaches one worker: it tells the parent, which sends the others
SIGHUP, so every worker reads the same file and runs the same config version.

Workers share nothing in memory, so their state must be in Redis: the memory store would be one
store per worker (``refusal``). Their metrics are merged through ``metrics_dir``
(app/observability/replica_metrics.py), so one scrape of any worker reports the whole replica.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import SimpleQueue
from types import FrameType

from app.config import GatewayConfig

log = logging.getLogger("apigw.workers")

# Seconds a worker that keeps dying waits before its next start: doubled from the first to the last
# while it dies young, so a worker that cannot start does not spin the machine.
_FIRST_BACKOFF, _LAST_BACKOFF, _YOUNG = 0.5, 10.0, 10.0
# Seconds the parent waits past the drain for a worker to exit before it kills the worker.
_EXIT_GRACE = 10.0


def worker_count(value: str) -> int:
    """``--workers``: a positive number, or ``auto`` for one per core."""
    if value == "auto":
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a number of workers (1 or more) or auto")
    return int(value)


def refusal(config: GatewayConfig, count: int) -> str | None:
    """Why ``count`` workers cannot serve this config (None: they can)."""
    if count > 1 and not config.redis.configured:
        return (f"--workers {count} needs Redis: on the memory store each worker would keep a store of its "
                "own (its own rate limits, cache and circuits). Configure redis.url (or "
                "API_GATEWAY_REDIS_URL), or run one worker.")
    return None


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker needs to build its gateway: the parent's command line, not its objects."""

    config_path: str | None
    host: str
    port: int
    log_level: str
    metrics_dir: str


def bind(host: str, port: int) -> socket.socket:
    """A listening socket's bind, as uvicorn makes it (uvicorn's server calls listen)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def run_worker(spec: WorkerSpec, index: int, sockets: list[list[socket.socket]], reloads: SimpleQueue[int]) -> None:
    """A worker process's body: the gateway of a single process, on the parent's sockets."""
    from app.edge.drain import exit_zero_on_sigterm

    exit_zero_on_sigterm()  # a SIGTERM while starting: nothing in flight, a clean stop
    from app.config import load_config
    from app.edge.listener import listeners, run
    from app.gateway import Gateway
    from app.reload import ConfigFile
    from app.observability import replica_metrics

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _stop_when_orphaned()
    # SIGHUP (from the parent) and the admin API read the same file again, as a single process does.
    gateway = Gateway(load_config(spec.config_path), ConfigFile(spec.config_path))
    gateway.lifecycle.worker = index
    gateway.lifecycle.on_reloaded = lambda: reloads.put(index)
    replica_metrics.share(spec.metrics_dir)
    servers = listeners(gateway, spec.host, spec.port, log_level=spec.log_level)
    try:
        run(servers, sockets[:len(servers)], beside=replica_metrics.keep_writing)
    except KeyboardInterrupt:
        pass
    finally:
        replica_metrics.write_snapshot()  # its last counts stay in the replica's sums


def _stop_when_orphaned() -> None:
    """Drain as on SIGTERM when the parent is gone (killed), rather than serve on unsupervised."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


class _Slot:
    __slots__ = ("backoff", "index", "not_before", "process", "started")

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: SpawnProcess | None = None
        self.started = 0.0
        self.backoff = _FIRST_BACKOFF
        self.not_before = 0.0


class Supervisor:
    def __init__(self, spec: WorkerSpec, count: int, sockets: list[list[socket.socket]], drain_seconds: float) -> None:
        self.spec = spec
        self.sockets = sockets
        self.slots = [_Slot(index) for index in range(count)]
        self.drain_seconds = drain_seconds
        self.context = multiprocessing.get_context("spawn")
        # A worker's number once it applied a reload the admin API asked of it: the others are sent
        # SIGHUP, so one call reloads the whole replica and every worker runs the same version.
        self.reloads: SimpleQueue[int] = self.context.SimpleQueue()
        self.stopping_since: float | None = None
        self.failed = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._forward)
        for slot in self.slots:
            self._start(slot)
        while True:
            time.sleep(0.1)
            self._pass_reloads_on()
            if self._tend():
                break
        for group in self.sockets:
            for sock in group:
                sock.close()
        return 1 if self.failed else 0

    def _start(self, slot: _Slot) -> None:
        slot.process = self.context.Process(target=run_worker,
                                            args=(self.spec, slot.index, self.sockets, self.reloads),
                                            name=f"apigw-worker-{slot.index}")
        slot.process.start()
        slot.started = time.monotonic()
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)
        if self.stopping_since is not None:  # SIGTERM came while it was starting
            self._signal_workers(signal.SIGTERM)

    def _tend(self) -> bool:
        """Restart the workers that died; True once stopping and every worker has exited."""
        now = time.monotonic()
        running = 0
        for slot in self.slots:
            process = slot.process
            if process is not None and process.is_alive():
                running += 1
                if self.stopping_since is not None and now > self.stopping_since + self.drain_seconds + _EXIT_GRACE:
                    log.error("worker %d (pid %d) still running after the drain: killing it", slot.index, process.pid)
                    process.kill()
                continue
            if process is not None:
                process.join()
                code = process.exitcode
                slot.process = None
                if self.stopping_since is not None:
                    # -SIGTERM: stopped by it before it could drain, as it was still starting.
                    if code not in (0, -signal.SIGTERM):
                        self.failed = True
                        log.error("worker %d (pid %d) exited with %s while stopping", slot.index, process.pid, code)
                    continue
                slot.backoff = _FIRST_BACKOFF if now - slot.started >= _YOUNG else min(slot.backoff * 2, _LAST_BACKOFF)
                slot.not_before = now + (0.0 if now - slot.started >= _YOUNG else slot.backoff)
                log.error("worker %d (pid %d) exited with %s; restarting it", slot.index, process.pid, code)
            if self.stopping_since is None and now >= slot.not_before:
                self._start(slot)
                running += 1
        return self.stopping_since is not None and running == 0

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
            log.info("stopping: %s to every worker", signal.Signals(signum).name)
        self._signal_workers(signal.SIGTERM)

    def _pass_reloads_on(self) -> None:
        while not self.reloads.empty():
            reloaded = self.reloads.get()
            log.info("worker %d reloaded its config through the admin API: SIGHUP to the others", reloaded)
            self._signal_workers(signal.SIGHUP, but=reloaded)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self._signal_workers(signum)

    def _signal_workers(self, signum: int, but: int | None = None) -> None:
        for slot in self.slots:
            if slot.index != but and slot.process is not None and slot.process.pid is not None:
                try:
                    os.kill(slot.process.pid, signum)
                except ProcessLookupError:
                    pass


def serve_workers(config: GatewayConfig, config_path: str | None, host: str, port: int, count: int,
                  log_level: str) -> int:
    """Bind, run ``count`` workers until SIGTERM and all of them have exited; the exit status."""
    sockets = [[bind(host, port)]]
    if config.admin.listen is not None:
        sockets.append([bind(config.admin.listen.host, config.admin.listen.port)])
    metrics_dir = tempfile.mkdtemp(prefix="apigw-metrics-")
    try:
        spec = WorkerSpec(config_path, host, port, log_level, metrics_dir)
        drain = config.server.drain_delay + config.server.drain_timeout
        log.info("serving on %s port %d with %d workers", host, port, count)
        return Supervisor(spec, count, sockets, drain).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
