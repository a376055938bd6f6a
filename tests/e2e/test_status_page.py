"""The status page in headless Chromium (Debian's package), after real traffic through two gateway
replicas (processes) on one Redis: what it shows, and a screenshot under test-output/."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.support import ROOT, BackendServer, GatewayProcess, replicas, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "status-page-token-0123456789"
OUTPUT = ROOT / "test-output"
# The client id is the client's to choose: the page must show it as text, never run it.
HOSTILE = '<img src=x onerror="document.title=1">'


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return exe


def run_chromium(profile: Path, *args: str, timeout: float = 90) -> str:
    """One headless run in a fresh profile; whatever it started is gone afterwards."""
    argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}",
            "--virtual-time-budget=5000", *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # renderer, zygote and the like
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    return out


class Dom(HTMLParser):
    """Text by element id, and table rows (cell texts) by data- attribute."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, list[str]] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self.styles: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []
        self._row: list[str] | None = None
        self._row_kind: str | None = None
        self._cell: list[str] | None = None
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag in ("meta", "input", "br", "img"):
            return
        ident = a.get("id")
        if ident:
            self.by_id.setdefault(ident, [])
            self.styles[ident] = a.get("style") or ""
        self._open.append((tag, ident))
        kind = next((k for k in ("data-route", "data-client", "data-circuit", "data-audit") if k in a), None)
        if tag == "tr" and kind:
            self._row, self._row_kind = [], kind
        if tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.setdefault(self._row_kind or "", []).append(self._row)
            self._row = None
        while self._open:
            open_tag, _ = self._open.pop()
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, ident in self._open:
            if ident:
                self.by_id[ident].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def text(self, ident: str) -> str:
        return " ".join("".join(self.by_id.get(ident, [])).split())


@pytest.fixture
def fleet(redis_url: str, key_prefix: str, redis_client: object, backend: BackendServer,
          backend_b: BackendServer) -> Iterator[list[GatewayProcess]]:
    config = {
        "redis": {"url": redis_url, "prefix": key_prefix},
        "admin": {"token": TOKEN},
        # The test's clients name themselves with X-Client-ID from this machine.
        "rate_limiter": {"client_id_trusted_from": ["127.0.0.0/8"]},
        "router": {"routes": [
            {"id": "cached", "path": "/cached/*", "target": backend.url, "strip_prefix": True, "cache": {"ttl": 30}},
            {"id": "api", "path": "/api/*", "targets": [{"url": backend.url}, {"url": backend_b.url}],
             "strip_prefix": True, "cache": {"enabled": False}},
            {"id": "limited", "path": "/limited/*", "target": backend_b.url, "strip_prefix": True,
             "cache": {"enabled": False}, "rate_limit": {"requests_per_minute": 2}},
            {"id": "fragile", "path": "/fragile/*", "target": backend_b.url, "strip_prefix": True,
             "cache": {"enabled": False}, "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": 60}},
        ]},
    }
    with replicas(config, 2) as procs:
        yield procs


def test_status_page_in_headless_chromium_shows_the_fleet(fleet: list[GatewayProcess], backend: BackendServer,
                                                          backend_b: BackendServer, tmp_path: Path) -> None:
    one, two = fleet
    for i in range(6):  # alice: a miss, then five hits, through both replicas
        answer = httpx.get(f"{fleet[i % 2].url}/cached/report", headers={"X-Client-ID": "alice"})
        assert answer.status_code == 200
    for _ in range(3):
        httpx.get(f"{two.url}/api/x", headers={"X-Client-ID": HOSTILE})
    # carol spends her 2 a minute on /limited, through both replicas, and is refused a third.
    codes = [httpx.get(f"{gw.url}/limited/x", headers={"X-Client-ID": "carol"}).status_code for gw in (one, two, one)]
    assert codes == [200, 200, 429]
    # Two failures through two replicas open the circuit of /fragile for both.
    for gw in (one, two):
        assert httpx.get(f"{gw.url}/fragile/status/500", headers={"X-Client-ID": "dan"}).status_code == 500
    assert httpx.get(f"{one.url}/fragile/ok", headers={"X-Client-ID": "dan"}).status_code == 503

    def counted() -> bool:
        status = httpx.get(f"{one.url}/_gateway/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        return sum(c["requests"] for c in status["clients"]["items"]) == 15
    wait_for(counted, timeout=15, what="both replicas' counts to reach Redis")
    # An admin change through the other replica, its target a name the caller chose.
    changed = httpx.put(f"{two.url}/_gateway/clients/{quote(HOSTILE, safe='')}/limits",
                        headers={"Authorization": f"Bearer {TOKEN}"}, json={"requests_per_minute": 5})
    assert changed.status_code == 200, changed.text

    page = f"{one.url}/_gateway/#token={TOKEN}"
    dom = Dom(run_chromium(tmp_path / "profile", "--dump-dom", "--window-size=1280,1000", page))

    assert "RedisStore (answering)" in dom.text("replica")
    assert dom.text("updated").startswith("updated ")
    assert dom.text("error") == ""
    # Routes and targets with their health.
    routes = {row[0]: row for row in dom.rows["data-route"]}
    assert set(routes) == {"cached", "api", "limited", "fragile"}
    assert routes["cached"][1] == "/cached/*"
    assert f"up {backend.url} w100" in routes["api"][3] and f"up {backend_b.url} w100" in routes["api"][3]
    # The cache's fleet-wide hit rate: 5 hits of 6 lookups.
    assert dom.text("cache-hit-rate") == "83.3%"
    assert dom.text("cache-counts").startswith("5 hits, 1 misses, 1 entries")
    # The busiest clients, counted across both replicas, the hostile id shown as plain text.
    clients = {row[0]: row for row in dom.rows["data-client"]}
    assert [(row[0], row[1]) for row in dom.rows["data-client"]] == [
        ("alice", "6"), (HOSTILE, "3"), ("carol", "3"), ("dan", "3")]
    # Their quota: the client's own (60 a minute, 1000 an hour by default; refused requests are not
    # counted) and what is left on the rate-limited route.
    assert clients["carol"][2:6] == ["58 of 60", "", "998 of 1000", "58"]
    assert clients["carol"][6] == "limited 0 of 2"
    assert clients["alice"][6] == "limited 2 of 2"
    # The circuit that two replicas' failures opened, on the route and in the circuits table.
    assert routes["fragile"][4] == "open" and routes["cached"][4] == "closed"
    assert dom.rows["data-circuit"] and {row[0]: row[1] for row in dom.rows["data-circuit"]}["fragile"] == "open"
    # The latest admin changes, fleet-wide, the hostile target shown as plain text.
    [change] = dom.rows["data-audit"]
    assert change[1:] == ["admin (write)", "client.limits.set", HOSTILE, "ok"]
    assert not any(tag == "img" for tag, _ in dom.tags), "a client id was run as HTML"

    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "status-page.png"
    shot.unlink(missing_ok=True)
    run_chromium(tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,1000", page)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    shutil.copy(shot, tmp_path / "status-page.png")


def test_status_page_asks_for_the_token_it_lacks(fleet: list[GatewayProcess], tmp_path: Path) -> None:
    dom = Dom(run_chromium(tmp_path / "profile", "--dump-dom", "--window-size=1280,1000", f"{fleet[0].url}/_gateway/"))
    assert "display: block" in dom.styles["login"]
    assert dom.text("error") == "missing or wrong admin token"
    assert not dom.rows.get("data-route")
