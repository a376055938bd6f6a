"""The package as a user installs it: a wheel (or an editable install) in a fresh venv, run from
another directory, carries every Redis script and serves with its limits on.

What is installed is built from exactly what deploy/Dockerfile copies (pyproject.toml, setup.py,
README.md, app/, lua/), so the image's install is checked here too. The fresh venv sees this test
run's site-packages for the dependencies (a .pth file, whose folder's own .pth files Python does not
run, so this checkout's editable install stays out of it); only apigw itself is installed into it.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from app.store.script_sources import SCRIPT_NAMES
from tests.support import ROOT, free_port, wait_for

pytestmark = pytest.mark.redis

# What deploy/Dockerfile copies into the image before its `pip install .`.
SOURCES = ("pyproject.toml", "setup.py", "README.md", "app", "lua")


@dataclass
class Install:
    python: Path
    elsewhere: Path  # a directory that is neither the checkout nor the copy it was installed from

    def run(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), *args], cwd=self.elsewhere, capture_output=True, text=True,
                              timeout=60, env=_env(), **kwargs)  # type: ignore[call-overload]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("API_GATEWAY_") and k != "PYTHONPATH"}
    return env | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240, env=_env())
    assert done.returncode == 0, f"pip {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _fresh_venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=60)
    python = where / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "apigw-test-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def _copy_sources(into: Path) -> Path:
    into.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, into / name)
    return into


@pytest.fixture(scope="module", params=["wheel", "editable"])
def install(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    base = tmp_path_factory.mktemp(f"install-{request.param}")
    sources = _copy_sources(base / "src")
    python = _fresh_venv(base / "venv")
    if request.param == "wheel":
        _pip("wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(sources), cwd=base)
        (wheel,) = (base / "dist").glob("apigw-*.whl")
        _pip("--python", str(python), "install", "--no-deps", "-q", str(wheel), cwd=base)
        shutil.rmtree(sources)  # the wheel must stand on its own
    else:
        _pip("--python", str(python), "install", "--no-deps", "-q", "-e", str(sources), cwd=base)
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    yield Install(python, elsewhere)


def test_the_installed_package_reads_every_script_from_its_install(install: Install) -> None:
    done = install.run("-c", "import app; from app.store.script_sources import script_sources, scripts_dir; "
                             "print(app.__file__); print(scripts_dir()); print(','.join(sorted(script_sources())))")
    assert done.returncode == 0, done.stderr
    package, folder, names = done.stdout.split()
    assert not Path(package).is_relative_to(ROOT), f"imported this checkout's package, not the installed one: {package}"
    assert not Path(folder).is_relative_to(ROOT), folder
    assert names.split(",") == sorted(SCRIPT_NAMES)
    script = subprocess.run([str(install.python.parent / "apigw"), "check-config", "--help"], cwd=install.elsewhere,
                            capture_output=True, text=True, timeout=60, env=_env())
    assert script.returncode == 0 and "check-config" in script.stdout, "the install's apigw command"
    checked = subprocess.run([sys.executable, "-m", "pip", "--python", str(install.python), "check"],
                             capture_output=True, text=True, timeout=60, env=_env())
    assert checked.returncode == 0, f"the installed package's dependencies:\n{checked.stdout}"


def test_the_install_holds_every_file_of_the_package(install: Install) -> None:
    done = install.run("-c", "import app; print(app.__file__)")
    installed = Path(done.stdout.strip()).parent
    source = ROOT / "app"
    wanted = {p.relative_to(source) for p in source.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    missing = sorted(str(p) for p in wanted if not (installed / p).is_file())
    assert not missing, f"not in the install (a data file needs its package_data entry in setup.py): {missing}"


def test_the_demo_runs_from_another_directory(install: Install) -> None:
    port = free_port()
    proc = subprocess.Popen([str(install.python), "-m", "app", "demo", "--port", str(port)], cwd=install.elsewhere,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/_gateway/health", timeout=1).status_code == 200,
                 timeout=30, what="the demo gateway")
        answer = httpx.get(f"{base}/api/v1/agents")
        assert answer.status_code == 200 and answer.json()["service"] == "agent-service"
        assert "ratelimit-remaining" in answer.headers, "the rate limit did not run"
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert "Traceback" not in output, output


def _serve(install: Install, redis_url: str, key_prefix: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    config = install.elsewhere / f"gateway-{port}.yaml"
    config.write_text(yaml.safe_dump({
        "redis": {"url": redis_url, "prefix": key_prefix},
        "rate_limiter": {"default": {"requests_per_minute": 2}, "failure_policy": "fail_closed"}}))
    proc = subprocess.Popen([str(install.python), "-m", "app", "serve", "--config", str(config), "--port", str(port)],
                            cwd=install.elsewhere, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env())
    return proc, f"http://127.0.0.1:{port}"


def test_serve_on_redis_keeps_its_limits(install: Install, redis_url: str, key_prefix: str) -> None:
    proc, base = _serve(install, redis_url, key_prefix)
    try:
        wait_for(lambda: httpx.get(f"{base}/_gateway/ready", timeout=1).status_code == 200,
                 timeout=30, what="the gateway on Redis")
        codes = [httpx.get(f"{base}/nowhere", headers={"X-Client-ID": "pkg"}).status_code for _ in range(3)]
        assert codes == [404, 404, 429], "the scripts did not run: the limit was not kept"
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert "Traceback" not in output, output


def test_serve_refuses_to_start_when_a_script_is_missing(
        install: Install, redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    folder = Path(install.run("-c", "from app.store.script_sources import scripts_dir; print(scripts_dir())")
                  .stdout.strip())
    script = folder / "ratelimit.lua"
    kept = tmp_path / script.name
    shutil.move(script, kept)
    try:
        proc, _ = _serve(install, redis_url, key_prefix)
        output, _ = proc.communicate(timeout=30)
    finally:
        shutil.move(kept, script)
    assert proc.returncode == 1, output
    assert "Redis scripts missing" in output and "ratelimit" in output and "Traceback" not in output, output
