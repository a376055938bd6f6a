"""The public HTTP cache test suite (http-cache-tests on npm, the suite behind cache-tests.fyi) run
through the gateway: its origin server behind one catch-all route, its command-line client in
front, in each cache mode (``cache.mode``: seed and rfc9111), on the memory store and on Redis.

The suite is installed with the machine's Node.js into a cache directory outside the repository and
reused between runs. Its results are counted by the kinds its own pages show
(http_cache_summary.mjs) and compared with the mode's counts in http_cache_baseline.json: passes
may only go up, conformance failures (the suite's "⛔️") only down. When a change improves them, write the new
counts into the baseline (the failure message prints them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import parse_config
from tests.support import GatewayThread, free_port, wait_for

SUITE = "http-cache-tests"
VERSION = "0.4.5"
HERE = Path(__file__).resolve().parent
BASELINE = HERE / "http_cache_baseline.json"
SUMMARY = HERE / "http_cache_summary.mjs"
# The CLI runs the whole suite in chunks of 100 tests at once; a run takes well under a minute.
RUN_TIMEOUT = 240


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "apigw" / f"{SUITE}-{VERSION}"


def _node_env(**config: str) -> dict[str, str]:
    """The suite's scripts read their settings as ``npm run`` passes them, so that they run with
    plain ``node``: no npm between the test and the processes it stops. Both forms are set: a
    script reads ``npm_config_X || npm_package_config_X``, and an empty setting (``id``: run
    every test) is only seen in the second."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("npm_")}
    for name, value in config.items():
        env[f"npm_config_{name}"] = env[f"npm_package_config_{name}"] = value
    return env


@pytest.fixture(scope="session")
def suite_dir() -> Path:
    """The installed package, from the cache when an earlier run installed it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js is not installed (node and npm): the HTTP cache suite cannot run")
    package = _cache_dir() / "node_modules" / SUITE
    if (package / "cli.mjs").exists():
        return package
    _cache_dir().parent.mkdir(parents=True, exist_ok=True)
    # Installed beside the cache directory, then moved into place: a run that is cut off halfway
    # leaves no half-installed suite to be taken for a whole one.
    staging = Path(tempfile.mkdtemp(prefix=f"{SUITE}-", dir=_cache_dir().parent))
    try:
        subprocess.run([npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund", "--no-save",
                        "--loglevel=error", f"{SUITE}@{VERSION}"],
                       check=True, timeout=300, capture_output=True)
        try:
            staging.rename(_cache_dir())
        except OSError:  # another run installed it meanwhile
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return package


@pytest.fixture(scope="session")
def origin(suite_dir: Path) -> Iterator[str]:
    """The suite's origin server on a free port (it listens on every interface; the suite's
    client and the gateway reach it on loopback)."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="http-cache-origin-"))
    log = open(workdir / "origin.log", "wb")
    proc = subprocess.Popen(["node", "server/server.mjs"], cwd=suite_dir, stdout=log, stderr=subprocess.STDOUT,
                            env=_node_env(protocol="http", port=str(port), pidfile=str(workdir / "origin.pid")))
    try:
        wait_for(lambda: b"Listening on" in (workdir / "origin.log").read_bytes(), timeout=20,
                 what="the HTTP cache suite's origin server")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _run_suite(suite_dir: Path, base_url: str) -> dict[str, Any]:
    """Every test of the command line's set through ``base_url``, counted by kind."""
    run = subprocess.run(["node", "--no-warnings", "cli.mjs"], cwd=suite_dir, capture_output=True,
                         timeout=RUN_TIMEOUT, env=_node_env(base=base_url, id=""))
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    with tempfile.NamedTemporaryFile("wb", suffix=".json") as results:
        results.write(run.stdout)
        results.flush()
        summary = subprocess.run(["node", "--no-warnings", str(SUMMARY), str(suite_dir), results.name],
                                 capture_output=True, check=True, timeout=60)
    return json.loads(summary.stdout)


def _gateway_config(origin: str, mode: str, store: str, redis_url: str | None, prefix: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "router": {"routes": [{"path": "/*", "target": origin}]},
        "cache": {"mode": mode},
        # The suite sends a few thousand requests from one client in a minute, and some of its
        # answers are 5xx on purpose: neither a rate limit nor a circuit is what it tests.
        "rate_limiter": {"enabled": False},
        "circuit_breaker": {"enabled": False},
        "server": {"access_log": False},
    }
    if store == "redis":
        config["redis"] = {"url": redis_url, "prefix": prefix}
    return config


@pytest.mark.timeout(RUN_TIMEOUT + 120)
@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("mode", ["seed", "rfc9111"])
def test_http_cache_suite_no_worse_than_the_baseline(request: pytest.FixtureRequest, suite_dir: Path,
                                                     origin: str, mode: str, store: str, key_prefix: str) -> None:
    redis_url = None
    if store == "redis":
        request.getfixturevalue("redis_client")  # removes the run's keys afterwards
        redis_url = request.getfixturevalue("redis_url")
    config = parse_config(_gateway_config(origin, mode, store, redis_url, key_prefix), {})
    with GatewayThread(config) as gateway:
        summary = _run_suite(suite_dir, gateway.url)
    counts = summary["counts"]
    recorded = json.loads(BASELINE.read_text())
    baseline = recorded["modes"][mode]
    report = (f"{mode}, {store}: {counts['pass']} passed, {counts['fail']} conformance failures "
              f"(baseline {baseline['pass']} / {baseline['fail']}); all kinds: {json.dumps(counts)}; "
              f"by name: {json.dumps(summary['named'])}")
    print(report)  # the counts, for the log of a run that passes too
    assert sum(counts.values()) == recorded["tests"], report
    assert counts["pass"] >= baseline["pass"], report
    assert counts["fail"] <= baseline["fail"], report
