"""The private parts of third-party packages the gateway relies on, checked as the code uses them.

Each is used because no public API does the job at the request path's cost (the figures are in the
commits that pinned them), so each package is pinned to the exact version these checks passed
with (pyproject.toml). Before moving a pin: install the new version, run this file, and fix what it
names. A failure here names the private API that changed and the module of ours that uses it.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import textwrap
import tomllib
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path

import aiohttp
import httpx
import pytest
import uvicorn
from multidict import CIMultiDict
from yarl import URL

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
# package -> (the private API, our module that uses it)
PINNED = {
    "uvicorn": ("uvicorn.protocols.http.httptools_impl.HttpToolsProtocol and "
                "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol",
                "app/edge/http_protocol.py, app/edge/websocket_protocol.py"),
    "aiohttp": ("aiohttp.ClientRequest.update_headers/update_auto_headers/_skip_auto_headers, "
                "aiohttp.client_proto.ResponseHandler and TCPConnector._factory, and the steps of "
                "ClientSession._request (ClientRequest(...).send/close/_body, BaseConnector.connect, "
                "ResponseHandler.set_response_params, ClientResponse.start, helpers.TimerNoop)",
                "app/edge/upstream.py, app/edge/upstream_protocol.py"),
    "hishel": ("hishel._core (CacheControl, parse_cache_control, get_freshness_lifetime)", "app/cache/policy.py"),
}


def _pins() -> dict[str, str]:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for spec in dependencies:
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;\s]+)", spec.strip())
        if found:
            pins[found.group(1).lower()] = found.group(2)
    return pins


@pytest.mark.parametrize("package", sorted(PINNED))
def test_each_package_whose_internals_are_used_is_pinned_to_the_version_checked_here(package: str) -> None:
    private, user = PINNED[package]
    pinned = _pins().get(package)
    assert pinned is not None, f"{user} uses {private}: pin {package} to an exact version in pyproject.toml"
    assert version(package) == pinned, (
        f"{package} {version(package)} is installed, pyproject.toml pins {pinned}; {user} uses {private}: "
        "run this file on the installed version before moving the pin")


# -- uvicorn: app/edge/http_protocol.py -------------------------------------------------------

def test_uvicorn_httptools_protocol_is_the_class_uvicorn_runs_for_httptools() -> None:
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert HTTP_PROTOCOLS.get("httptools") == f"{HttpToolsProtocol.__module__}:HttpToolsProtocol", (
        "uvicorn no longer runs httptools_impl.HttpToolsProtocol for http='httptools': "
        "app/edge/http_protocol.py extends it")
    params = list(inspect.signature(HttpToolsProtocol.connection_made).parameters)
    assert params == ["self", "transport"], (
        f"HttpToolsProtocol.connection_made{params}: app/edge/http_protocol.py calls it with its transport")


async def test_uvicorn_httptools_protocol_writes_through_the_transport_given_to_connection_made() -> None:
    """The protocol keeps the transport it was given as ``.transport`` and writes through it, and it
    has ``.loop``: what GatewayHttpProtocol relies on to put its CoalescingTransport in between."""
    from app.edge.coalescing import CoalescingTransport
    from app.edge.http_protocol import GatewayHttpProtocol

    async def app(scope: dict, receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=GatewayHttpProtocol,
                                           lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient() as client:
            first = await client.get(f"http://127.0.0.1:{port}/")
            (protocol,) = server.server_state.connections
            assert isinstance(protocol, GatewayHttpProtocol)
            assert protocol.loop is asyncio.get_running_loop(), "HttpToolsProtocol.loop is gone"
            assert isinstance(protocol.transport, CoalescingTransport), (
                "HttpToolsProtocol does not keep the transport given to connection_made as .transport")
            second = await client.get(f"http://127.0.0.1:{port}/")
        assert (first.status_code, first.text, second.text) == (200, "ok", "ok")
    finally:
        server.should_exit = True
        await serving


def test_uvicorn_websocket_protocol_is_made_and_fed_as_the_edge_hands_over() -> None:
    """GatewayHttpProtocol._upgrade_to_websocket does what uvicorn's handle_websocket_upgrade does
    (a protocol made from the HTTP protocol's config, server_state and app_state, given the transport,
    fed the head again), and GatewayWebSocketProtocol completes the scope that handle_connect makes
    before the app's task has run."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    upgrade = inspect.getsource(HttpToolsProtocol.handle_websocket_upgrade)
    for piece in ("self.ws_protocol_class(", "config=self.config", "server_state=self.server_state",
                  "app_state=self.app_state", "protocol.connection_made(self.transport)",
                  "self.transport.set_protocol(protocol)", "protocol.data_received("):
        assert piece in upgrade, f"HttpToolsProtocol.handle_websocket_upgrade no longer has {piece!r}"
    assert list(inspect.signature(WebSocketsSansIOProtocol).parameters)[:3] == ["config", "server_state", "app_state"]
    connect = inspect.getsource(WebSocketsSansIOProtocol.handle_connect)
    assert connect.index("self.scope") < connect.index("create_task(self.run_asgi())"), (
        "WebSocketsSansIOProtocol.handle_connect no longer makes self.scope before starting the app")
    assert '"extensions": {"websocket.http.response": {}}' in connect, (
        "uvicorn's WebSocket protocol no longer offers the denial response the gateway refuses handshakes with")


# -- aiohttp: app/edge/upstream.py ------------------------------------------------------------

def test_aiohttp_client_request_steps_that_the_proxy_replaces_are_still_there() -> None:
    request = aiohttp.ClientRequest
    for name, params in (("update_headers", ["self", "headers"]),
                         ("update_auto_headers", ["self", "skip_auto_headers"])):
        found = getattr(request, name, None)
        assert found is not None, f"aiohttp.ClientRequest.{name} is gone: app/edge/upstream.py replaces it"
        assert list(inspect.signature(found).parameters) == params, f"aiohttp.ClientRequest.{name} changed"
    source = inspect.getsource(request)
    assert "self._skip_auto_headers" in source, (
        "aiohttp.ClientRequest no longer reads _skip_auto_headers: app/edge/upstream.py sets it")
    assert "request_class" in inspect.signature(aiohttp.ClientSession).parameters


async def test_aiohttp_client_request_with_the_proxys_steps_builds_the_same_headers() -> None:
    """The proxy's request class against aiohttp's own, given the session's skip list: the same
    headers and the same skip list, for what a proxy sends and for a caller that names a Host."""
    from app.edge.upstream import _NO_AUTO_HEADERS, _ProxiedRequest

    url = URL("http://backend.example:8001/base/path?q=1")
    cases = [
        [("X-Request-ID", "r1"), ("Accept", "application/json"), ("X-Forwarded-For", "10.0.0.1")],
        [("Cookie", "a=1"), ("cookie", "b=2"), ("Content-Type", "text/plain")],
        [],
        [("Host", "other.example"), ("X-A", "1")],
        [("X-A", "1"), ("host", "a.example"), ("X-B", "2"), ("HOST", "b.example")],
        CIMultiDict([("X-B", "2"), ("User-Agent", "client/1")]),
    ]
    for headers in cases:
        theirs = aiohttp.ClientRequest("GET", url, headers=headers, skip_auto_headers=_NO_AUTO_HEADERS,
                                       loop=asyncio.get_running_loop())
        ours = _ProxiedRequest("GET", url, headers=headers, skip_auto_headers=_NO_AUTO_HEADERS,
                               loop=asyncio.get_running_loop())
        assert list(ours.headers.items()) == list(theirs.headers.items()), (
            f"aiohttp.ClientRequest.update_headers/update_auto_headers changed: {headers}")
        assert set(ours.skip_auto_headers) == set(theirs.skip_auto_headers), "_skip_auto_headers changed"


async def test_aiohttp_connection_protocol_parts_that_the_backend_connector_uses_are_still_there() -> None:
    """app/edge/upstream_protocol.py: what it overrides, reads and sets on aiohttp's connection
    protocol and connector (its behaviour: tests/integration/test_misbehaving_origin.py)."""
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.http import HttpResponseParser  # noqa: F401  (it builds one)

    for name, params in (("data_received", ["self", "data"]), ("set_exception", ["self", "exc", "exc_cause"]),
                         ("feed_data", ["self", "data", "size"])):
        found = getattr(ResponseHandler, name, None)
        assert found is not None and list(inspect.signature(found).parameters) == params, (
            f"aiohttp.client_proto.ResponseHandler.{name} changed: app/edge/upstream_protocol.py overrides or calls it")
    handler = ResponseHandler(loop=asyncio.get_running_loop())
    for name in ("_skip_payload", "_should_close", "_parser", "_loop"):
        assert hasattr(handler, name), f"aiohttp.client_proto.ResponseHandler.{name} is gone: upstream_protocol.py uses it"
    connector = aiohttp.TCPConnector()
    try:
        factory = getattr(connector, "_factory", None)
        assert isinstance(getattr(factory, "func", None), type) and issubclass(factory.func, ResponseHandler), (
            "aiohttp.TCPConnector._factory no longer makes a ResponseHandler: upstream_protocol.py replaces it")
        assert connector._loop is asyncio.get_running_loop()
    finally:
        await connector.close()


def _calls_in_session_request(name: str) -> list[ast.Call]:
    """The calls to ``name`` (a function or a method) in aiohttp's ClientSession._request."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(aiohttp.ClientSession._request)))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and name == (node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None))]


def _keywords(call: ast.Call) -> set[str]:
    return {keyword.arg for keyword in call.keywords if keyword.arg is not None}


async def test_aiohttp_session_request_steps_that_upstream_send_takes_one_by_one_are_still_there() -> None:
    """app/edge/upstream.py sends a request with the steps of ClientSession._request (its behaviour:
    tests/integration/test_proxy.py and test_misbehaving_origin.py): the same calls, given what
    _request gives them, and the same cleanup, errors and resend around them."""
    from aiohttp import payload
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.helpers import TimeoutHandle, TimerNoop

    from app.edge.upstream import _IDEMPOTENT, UpstreamClient, _ProxiedRequest

    for owner, name, params in ((aiohttp.BaseConnector, "connect", ["self", "req", "traces", "timeout"]),
                                (aiohttp.ClientRequest, "send", ["self", "conn"]),
                                (aiohttp.ClientRequest, "close", ["self"]),
                                (aiohttp.ClientResponse, "start", ["self", "connection"])):
        found = list(inspect.signature(getattr(owner, name)).parameters)
        assert found == params, f"aiohttp {owner.__name__}.{name}{found} changed: app/edge/upstream.py calls it"

    client = UpstreamClient()
    client.session  # noqa: B018  (opens it)
    try:
        (parser_setup,) = _calls_in_session_request("set_response_params")
        ours = {"timer", "skip_payload", "read_timeout", *client._parser_params}
        assert _keywords(parser_setup) == ours, (
            f"ClientSession._request gives set_response_params {sorted(_keywords(parser_setup))}, "
            f"app/edge/upstream.py gives {sorted(ours)}")
        setup = inspect.signature(ResponseHandler.set_response_params).parameters
        assert ours <= set(setup), "aiohttp ResponseHandler.set_response_params changed"
        defaults = inspect.signature(aiohttp.ClientSession).parameters
        for name in ("read_bufsize", "max_line_size", "max_field_size", "max_headers"):
            assert client._parser_params[name] == defaults[name].default, (
                f"aiohttp ClientSession._{name} is not the session's {name}: app/edge/upstream.py reads it")
        assert client._parser_params["timeout_ceil_threshold"] == 5, (
            "aiohttp TCPConnector._timeout_ceil_threshold changed: app/edge/upstream.py reads it")
    finally:
        await client.close()

    (building,) = _calls_in_session_request("_request_class")
    assert _keywords(building) == {
        "params", "headers", "skip_auto_headers", "data", "cookies", "auth", "version", "compress", "chunked",
        "expect100", "loop", "response_class", "proxy", "proxy_auth", "timer", "session", "ssl",
        "server_hostname", "proxy_headers", "traces", "trust_env"}, (
        "ClientSession._request builds its request with other arguments: app/edge/upstream.py builds its own")
    assert {"headers", "data", "loop", "timer", "session", "ssl"} <= set(inspect.signature(aiohttp.ClientRequest).parameters)
    assert isinstance(TimeoutHandle(asyncio.get_running_loop(), None).timer(), TimerNoop), (
        "aiohttp's timer for no total timeout is no longer helpers.TimerNoop: app/edge/upstream.py passes one")

    request = " ".join(inspect.getsource(aiohttp.ClientSession._request).split())
    for piece in ("self._connector.connect( req, traces=traces, timeout=real_timeout )",
                  'except asyncio.TimeoutError as exc: raise ConnectionTimeoutError( f"Connection timeout to host {req.url}"',
                  "skip_payload=req.method in EMPTY_BODY_METHODS", "except BaseException: resp.close() raise",
                  "except BaseException: conn.close() raise", "method in IDEMPOTENT_METHODS",
                  "except (ClientOSError, ServerDisconnectedError):", "await req.close()",
                  "req._body.consumed: raise data = req._body", "raise ClientOSError(*exc.args) from exc",
                  "exc.errno is None and isinstance(exc, asyncio.TimeoutError)"):
        assert piece in request, f"ClientSession._request no longer has {piece!r}: app/edge/upstream.py does as it did"
    assert aiohttp.helpers.EMPTY_BODY_METHODS == {"HEAD"}
    assert aiohttp.client.IDEMPOTENT_METHODS == _IDEMPOTENT

    # _request closes the body's payload when done; a proxy's (bytes, a stream) holds nothing to close.
    for kind in (payload.BytesPayload, payload.AsyncIterablePayload):
        assert (kind.close, kind._close) == (payload.Payload.close, payload.Payload._close), (
            f"aiohttp {kind.__name__} now closes something: app/edge/upstream.py does not close it")

    async def stream() -> AsyncIterator[bytes]:
        yield b"x"

    url = URL("http://backend.example/")
    sent = _ProxiedRequest("PUT", url, data=stream(), loop=asyncio.get_running_loop())
    assert isinstance(sent._body, payload.AsyncIterablePayload) and sent._body.consumed is False, (
        "aiohttp ClientRequest._body/Payload.consumed changed: app/edge/upstream.py reads them to resend")


# -- hishel: app/cache/policy.py --------------------------------------------------------------

def test_hishel_core_parses_cache_control_as_the_policy_reads_it() -> None:
    from hishel._core._headers import CacheControl, parse_cache_control

    none = CacheControl()
    assert (none.no_store, none.no_cache, none.private, none.public, none.max_age, none.s_maxage) == (
        False, False, False, False, None, None), "hishel._core._headers.CacheControl() defaults changed"
    every = parse_cache_control('max-age=5, s-maxage=7, no-cache="Set-Cookie", private="X-A, X-B", public, '
                                "no-store, must-revalidate, proxy-revalidate, stale-while-revalidate=3, "
                                "stale-if-error=9")
    read = {name: getattr(every, name) for name in (
        "max_age", "s_maxage", "no_cache", "private", "public", "no_store", "must_revalidate",
        "proxy_revalidate", "stale_while_revalidate", "stale_if_error")}
    assert read == {"max_age": 5, "s_maxage": 7, "no_cache": ["Set-Cookie"], "private": ["X-A", "X-B"],
                    "public": True, "no_store": True, "must_revalidate": True, "proxy_revalidate": True,
                    "stale_while_revalidate": 3, "stale_if_error": 9}, (
        f"hishel._core._headers.parse_cache_control changed: {read}")
    assert parse_cache_control("no-cache, private").no_cache is True


def test_hishel_core_freshness_lifetime_takes_a_response_and_the_shared_flag() -> None:
    from hishel import Headers, Response
    from hishel._core._spec import get_freshness_lifetime

    assert list(inspect.signature(get_freshness_lifetime).parameters) == ["response", "is_cache_shared"], (
        "hishel._core._spec.get_freshness_lifetime's parameters changed")

    def lifetime(control: str, shared: bool = True) -> int | None:
        return get_freshness_lifetime(Response(status_code=200, headers=Headers({"cache-control": [control]})),
                                      shared)

    assert (lifetime("max-age=60"), lifetime("max-age=60, s-maxage=5"), lifetime("max-age=60, s-maxage=5", False)) \
        == (60, 5, 60), "hishel._core._spec.get_freshness_lifetime changed"
