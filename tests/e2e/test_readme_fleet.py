"""The README's "Run it as a fleet" runs as written: each shell block of it, run with bash against
``python -m app fleet``, prints what the block after it shows (``…`` standing for what changes)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from app.tools.fleet import WALKTHROUGH, FleetPorts
from tests.e2e.test_fleet import FleetRun, _own_redis_env
from tests.support import ROOT

pytestmark = pytest.mark.e2e


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Run it as a fleet")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks() -> list[tuple[str, str | None]]:
    """(shell, expected output or None) in the README's order, the set-up blocks left out."""
    found = re.findall(r"```(sh|text)\n(.*?)```", section(), re.S)
    pairs: list[tuple[str, str | None]] = []
    for i, (kind, body) in enumerate(found):
        if kind != "sh":
            continue
        expected = found[i + 1][1] if i + 1 < len(found) and found[i + 1][0] == "text" else None
        pairs.append((body, expected))
    return pairs


def exports_line() -> str:
    (line,) = [body.strip() for body, _ in blocks() if body.startswith("GW=")]
    return line


def walkthrough() -> list[tuple[str, str | None]]:
    return [(body, expected) for body, expected in blocks()
            if "apt-get" not in body and not body.startswith("GW=")]


def matches(expected: str, output: str) -> bool:
    pattern = []
    for line in expected.strip("\n").splitlines():
        line = line.strip()
        if line == "…":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append(".*".join(re.escape(part) for part in line.split("…")) + r"\n")
    got = "".join(line.strip() + "\n" for line in output.strip("\n").splitlines())
    return re.fullmatch("".join(pattern), got) is not None


def test_matches_understands_the_ellipsis() -> None:
    assert matches("a\n…\nb\n", "a\nx\ny\nb\n")
    assert matches("a\n…\nb\n", "a\nb\n")
    assert matches("x…z\n", "  xyz\n")
    assert not matches("a\nb\n", "a\nc\n")
    assert not matches("a\n", "a\nb\n")


def test_the_exports_and_the_banner_agree() -> None:
    defaults = FleetPorts()
    url = "http://127.0.0.1:{}".format
    assert exports_line() == (
        f"GW={url(defaults.balancer)} R1={url(defaults.first_replica)} R2={url(defaults.first_replica + 1)} "
        f"R3={url(defaults.first_replica + 2)} A={url(defaults.first_backend)} B={url(defaults.first_backend + 1)} "
        f'REDIS="redis-cli -p {defaults.redis}"')
    # What the fleet prints to try is in the README, word for word.
    readme = section()
    for line in WALKTHROUGH.strip().splitlines():
        if not line.startswith("#"):
            assert line in readme, line


def test_the_walkthrough_runs_as_written() -> None:
    for tool in ("curl", "redis-cli", "nginx"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin") is None:
            if os.environ.get("CI"):
                pytest.fail(f"{tool} is not installed")
            pytest.skip(f"{tool} is not installed")
    fleet = FleetRun("--replicas", "3", "--free-ports", env=_own_redis_env())
    try:
        fleet.wait_for_line("fleet ready: ")
        banner = "".join(fleet.output)
        exports = re.search(r"^\s*(GW=.*)$", banner, re.M)
        assert exports, banner
        env = {**os.environ}
        for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', exports.group(1)):
            env[name] = value.strip('"')
        for shell, expected in walkthrough():
            # The status block only reads; each replica adds its counts to Redis within a second,
            # so it may need a moment to see every request.
            deadline = time.monotonic() + (10 if "_gateway/status" in shell else 0)
            while True:
                done = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True, timeout=60)
                ok = done.returncode == 0 and (expected is None or matches(expected, done.stdout))
                if ok or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert done.returncode == 0, f"{shell}\nexit {done.returncode}: {done.stdout}{done.stderr}"
            if expected is not None:
                assert matches(expected, done.stdout), f"{shell}\nprinted:\n{done.stdout}\nREADME says:\n{expected}"
    finally:
        fleet.proc.send_signal(2)
        try:
            fleet.proc.wait(timeout=60)
        finally:
            fleet.kill()
