"""The fleet as processes: ``python -m app backend`` and ``python -m app fleet``."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.tools.fleet import find_nginx
from tests.support import ROOT, free_port, wait_for

pytestmark = pytest.mark.e2e


def test_backend_command_serves_a_demo_backend_until_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app", "backend", "--name", "svc-x", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"demo backend svc-x on http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/hello", timeout=1).status_code == 200,
                 what="backend")
        answer = httpx.get(f"http://127.0.0.1:{port}/hello?x=1").json()
        assert (answer["service"], answer["path"], answer["query"]) == ("svc-x", "/hello", {"x": "1"})
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- python -m app fleet ---------------------------------------------------------------------

def _start_time(pid: int) -> str | None:
    """The process's start time (to tell it from a later one that got the same pid); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def _descendants(root: int) -> dict[int, tuple[str, str]]:
    """Every process below ``root``: pid -> (command line, start time)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, tuple[str, str]] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        start = _start_time(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if start is not None:
            found[pid] = (cmdline, start)
        todo.extend(children.get(pid, []))
    return found


def _still_running(procs: dict[int, tuple[str, str]]) -> list[str]:
    return [cmd for pid, (cmd, start) in procs.items() if _start_time(pid) == start]


class FleetRun:
    """``python -m app fleet`` as a subprocess whose output is read line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "fleet", *args], cwd=ROOT, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def wait_for_line(self, prefix: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.output.append(line)
            if line == "":
                break
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"no line starting {prefix!r}; the fleet said:\n{''.join(self.output)}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # The fleet keeps its logs when it stops; a test's run leaves none behind.
        logs = re.search(r"logs\s+(\S+)", "".join(self.output))
        if logs is not None:
            shutil.rmtree(logs.group(1), ignore_errors=True)


def _own_redis_env() -> dict[str, str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_GATEWAY_REDIS_URL")}


def test_fleet_serves_through_nginx_and_sigint_leaves_no_process_behind() -> None:
    fleet = FleetRun("--replicas", "3", "--free-ports", env=_own_redis_env())
    try:
        ready = fleet.wait_for_line("fleet ready: ")
        gw = ready.removeprefix("fleet ready: ")
        banner = "".join(fleet.output)
        workdir = Path(re.search(r"logs\s+(\S+)", banner).group(1))  # type: ignore[union-attr]
        children = _descendants(fleet.proc.pid)
        commands = [cmd for cmd, _ in children.values()]
        assert sum(" -m app serve " in c for c in commands) == 3
        assert sum(" -m app backend " in c for c in commands) == 2
        assert sum(c.startswith(("redis-server", "/usr/bin/redis-server")) for c in commands) == 1
        with_nginx = find_nginx() is not None
        assert any("nginx: master" in c for c in commands) == with_nginx
        if with_nginx:
            assert "nginx, round robin over the replicas" in banner
            assert re.search(r"replica-1\s+" + re.escape(gw), banner) is None, "GW must be the balancer"

        # Real requests through the balancer: both backends answer, each with a request id.
        seen = set()
        for _ in range(6):
            answer = httpx.get(f"{gw}/api/who", timeout=10)
            assert answer.status_code == 200
            assert answer.headers["x-request-id"]
            seen.add(answer.json()["service"])
        assert seen == {"backend-a", "backend-b"}
        assert httpx.get(f"{gw}/nowhere", timeout=10).status_code == 404
        # The walkthrough's exports name every replica, and each serves.
        exports = dict(re.findall(r"\b(R\d)=(\S+)", banner))
        assert sorted(exports) == ["R1", "R2", "R3"]
        for url in exports.values():
            assert httpx.get(f"{url}/_gateway/ready", timeout=10).status_code == 200

        fleet.proc.send_signal(signal.SIGINT)
        assert fleet.proc.wait(timeout=60) == 0
        wait_for(lambda: not _still_running(children), timeout=10, what="the fleet's children to exit")
        # Its logs stay, and it says where.
        assert fleet.wait_for_line("fleet: stopped") == f"fleet: stopped; the logs stay in {workdir}"
        assert {"replica-1.log", "replica-3.log", "backend-a.log", "redis.log"} <= {p.name for p in workdir.iterdir()}
    finally:
        fleet.kill()


def test_a_rolling_restart_of_three_replicas_under_load_loses_no_request() -> None:
    if find_nginx() is None:
        pytest.skip("nginx is not installed: the balancer is what moves the load off a draining replica")
    fleet = FleetRun("--replicas", "3", "--free-ports", env=_own_redis_env())
    try:
        gw = fleet.wait_for_line("fleet ready: ").removeprefix("fleet ready: ")
        before = {pid for pid, (cmd, _) in _descendants(fleet.proc.pid).items() if " -m app serve " in cmd}
        assert len(before) == 3
        restarted = threading.Event()
        answers: list[list[int | str]] = [[] for _ in range(4)]

        def load(index: int) -> None:
            # Bounded: at most 400 requests per client, under its 600 a minute, and it stops with the restart.
            with httpx.Client(timeout=30, headers={"X-Client-ID": f"roller-{index}"}) as client:
                for n in range(400):
                    if restarted.is_set():
                        return
                    try:
                        # POST: the balancer never sends it twice, so one a replica dropped would show;
                        # slow, so that each replica has requests in flight when it is told to stop.
                        answer = client.post(f"{gw}/api/slow?seconds=0.3&n={index}-{n}", content=b"x" * 100)
                        # Which said no, when one does: nginx (HTML) or a replica (JSON).
                        answers[index].append(200 if answer.status_code == 200
                                              else f"{answer.status_code} {answer.text[:160]!r}")
                    except httpx.HTTPError as error:
                        answers[index].append(repr(error))
                    time.sleep(0.02)

        loaders = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(4)]
        for thread in loaders:
            thread.start()
        time.sleep(1)
        fleet.proc.send_signal(signal.SIGUSR1)
        try:
            fleet.wait_for_line("fleet: rolling restart done", timeout=240)
        finally:
            restarted.set()
            for thread in loaders:
                thread.join(timeout=60)
        restarts = [line for line in fleet.output if " restarted (exit code " in line]
        assert len(restarts) == 3 and all("(exit code 0," in line for line in restarts), restarts
        after = {pid for pid, (cmd, _) in _descendants(fleet.proc.pid).items() if " -m app serve " in cmd}
        assert len(after) == 3 and not after & before
        sent = [answer for per_client in answers for answer in per_client]
        assert len(sent) > 40  # load ran through the whole restart
        workdir = Path(re.search(r"logs\s+(\S+)", "".join(fleet.output)).group(1))  # type: ignore[union-attr]
        nginx_errors = (workdir / "nginx" / "error.log").read_text()[-3000:]
        assert [a for a in sent if a != 200] == [], nginx_errors
    finally:
        fleet.kill()


def test_fleet_killed_outright_takes_its_children_with_it() -> None:
    fleet = FleetRun("--replicas", "1", "--free-ports", env=_own_redis_env())
    try:
        fleet.wait_for_line("fleet ready: ")
        children = _descendants(fleet.proc.pid)
        assert len(children) >= 4  # Redis, two backends, a replica (and nginx)
        fleet.proc.kill()  # no chance to clean up: the children's parent-death signal does it
        fleet.proc.wait(timeout=10)
        wait_for(lambda: not _still_running(children), timeout=20, what="the orphans to exit")
    finally:
        fleet.kill()


def test_fleet_refuses_busy_ports_before_starting_anything_naming_each() -> None:
    with socket.socket() as busy, socket.socket() as also_busy:
        for sock in (busy, also_busy):
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        port, backend_port = busy.getsockname()[1], also_busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "app", "fleet", "--free-ports", "--no-nginx",
                               "--replica-port", str(port), "--backend-port", str(backend_port)],
                              cwd=ROOT, env=_own_redis_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is busy (Address already in use; --replica-port moves it)" in done.stderr
    assert f"port {backend_port} on 127.0.0.1 is busy (Address already in use; --backend-port moves it)" in done.stderr
    assert "--free-ports" in done.stderr and "logs" not in done.stdout  # nothing started, no logs to keep


def test_the_banner_speaks_of_the_replicas_there_are() -> None:
    from app.tools.fleet import WALKTHROUGH, _hits_on

    assert "then a HIT on replicas 2 and 3" in WALKTHROUGH  # the phrase the banner replaces
    assert [_hits_on(n) for n in (1, 2, 3, 5)] == [
        "then a HIT when run again", "then a HIT on replica 2", "then a HIT on replicas 2 and 3",
        "then a HIT on replicas 2 to 5"]


def test_fleet_on_a_redis_cluster_and_state_read_from_it() -> None:
    env = _own_redis_env()
    fleet = FleetRun("--redis-cluster", "--replicas", "2", "--free-ports", "--no-nginx", env=env)
    try:
        gw = fleet.wait_for_line("fleet ready: ").removeprefix("fleet ready: ")
        banner = "".join(fleet.output)
        assert "a Redis Cluster of 3 masters and 3 replicas" in banner
        commands = [cmd for cmd, _ in _descendants(fleet.proc.pid).values()]
        assert sum("redis-server" in c and "[cluster]" in c for c in commands) == 6
        cli = re.search(r'REDIS="(redis-cli -c -p (\d+))"', banner)
        assert cli is not None
        statuses = [httpx.get(f"{gw}/limited/x", headers={"X-Client-ID": "alice"}, timeout=10).status_code
                    for _ in range(7)]
        assert statuses == [200] * 5 + [429] * 2
        state = subprocess.run([sys.executable, "-m", "app", "state", "ratelimits",
                                "--redis-url", f"redis://127.0.0.1:{cli.group(2)}"],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert state.returncode == 0, state.stderr
        assert "redis-cli -c " in state.stdout
    finally:
        fleet.proc.send_signal(signal.SIGINT)
        try:
            fleet.proc.wait(timeout=60)
        finally:
            fleet.kill()
