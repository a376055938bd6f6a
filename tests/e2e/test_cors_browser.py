"""CORS as a browser sees it: headless Chromium (Debian's package) loads a page from another port
and calls the gateway with fetch. The allowed page's calls go through, preflight and all, and it
reads what it may; the same calls from a page of an origin not allowed are kept from it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from app.config import parse_config
from tests.e2e.test_status_page import Dom, run_chromium
from tests.support import BackendServer, GatewayThread, ThreadServer

pytestmark = pytest.mark.e2e

KEY = "browser-key-0123456789abcdef"

# What the page does: four calls, each result written into the page for --dump-dom to show.
SCRIPT = """
const out = {};
async function attempt(name, call) {
  try { out[name] = await call(); } catch (error) { out[name] = 'blocked: ' + error.name; }
}
async function main() {
  await attempt('put', async () => {
    const r = await fetch(GATEWAY + '/api/echo', {method: 'PUT', credentials: 'include',
      headers: {'X-API-Key': KEY, 'Content-Type': 'application/json'}, body: '{"a": 1}'});
    const body = await r.json();
    return [r.status, r.headers.get('X-Request-ID') ? 'id readable' : 'id hidden',
            r.headers.get('RateLimit-Remaining') === null ? 'limit hidden' : 'limit readable',
            body.headers['x-consumer-id']].join(' ');
  });
  await attempt('unauthorized', async () => {
    const r = await fetch(GATEWAY + '/api/echo', {credentials: 'include'});
    return r.status + ' ' + (await r.json()).error;
  });
  await attempt('delete', async () => {
    const r = await fetch(GATEWAY + '/api/echo', {method: 'DELETE', headers: {'X-API-Key': KEY}});
    return String(r.status);
  });
  await attempt('undeclared_header', async () => {
    const r = await fetch(GATEWAY + '/api/echo', {headers: {'X-API-Key': KEY, 'X-Other': '1'}});
    return String(r.status);
  });
  document.getElementById('result').textContent = JSON.stringify(out);
}
main();
"""


class PageServer(ThreadServer):
    """Serves one HTML page that runs SCRIPT against the gateway."""

    def __init__(self) -> None:
        super().__init__()
        self.gateway_url = ""  # set once the gateway, whose config names this page's origin, runs
        self.runner: web.AppRunner | None = None

    async def _page(self, _: web.Request) -> web.Response:
        html = (f"<!doctype html><html><body><pre id='result'>pending</pre><script>"
                f"const GATEWAY = {json.dumps(self.gateway_url)}; const KEY = {json.dumps(KEY)};{SCRIPT}"
                f"</script></body></html>")
        return web.Response(text=html, content_type="text/html")

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_get("/", self._page)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def __enter__(self) -> PageServer:
        self.thread.start()
        self.port = self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.runner is not None:
            self.run(self.runner.cleanup())
        self.stop()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def allowed_page() -> Iterator[PageServer]:
    with PageServer() as page:
        yield page


def _results(page: PageServer, gateway: GatewayThread, profile: Path) -> dict[str, str]:
    page.gateway_url = gateway.url
    dom = Dom(run_chromium(profile, "--dump-dom", f"{page.origin}/"))
    return json.loads(dom.text("result"))


def test_a_page_of_an_allowed_origin_calls_the_gateway_and_others_are_kept_out(
        allowed_page: PageServer, backend: BackendServer, tmp_path: Path) -> None:
    config = parse_config({
        "rate_limiter": {"api_keys": [{"key": KEY, "client_id": "browser-app"}]},
        "auth": {"methods": ["api_key"]},
        "router": {"routes": [{"path": "/api/*", "target": backend.url, "strip_prefix": True, "cors": {
            "origins": [allowed_page.origin], "methods": ["GET", "PUT"], "headers": ["X-API-Key", "Content-Type"],
            "expose_headers": ["X-Request-ID"], "credentials": True, "max_age": 60}}]},
    }, {})
    with GatewayThread(config) as gateway:
        backend.reset_hits()
        results = _results(allowed_page, gateway, tmp_path / "allowed")
        assert results == {
            # Preflighted (PUT, X-API-Key), sent with credentials, the exposed header readable and
            # the rest of the gateway's headers not.
            "put": "200 id readable limit hidden browser-app",
            # The gateway's own refusal is readable by the page: it carries the CORS headers too.
            "unauthorized": "401 authentication required",
            # A method and a header the route does not allow: the preflight's answer stops them.
            "delete": "blocked: TypeError",
            "undeclared_header": "blocked: TypeError",
        }
        # The backend got the PUT and nothing else: the gateway answered every preflight itself.
        assert backend.hits == {"/echo": 1}
        with PageServer() as stranger:  # another port: another origin
            kept_out = _results(stranger, gateway, tmp_path / "stranger")
        assert kept_out == {"put": "blocked: TypeError", "unauthorized": "blocked: TypeError",
                            "delete": "blocked: TypeError", "undeclared_header": "blocked: TypeError"}
