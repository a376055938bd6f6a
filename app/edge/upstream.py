"""The transport to backends: one aiohttp session per process, and the HTTP header rules of a proxy.

Policy (which target, retries, breakers) lives in the orchestrator; this module only sends a request
and hands back the response unread, so the caller can stream it.

A request is sent with the steps of aiohttp's ``ClientSession._request`` that a proxy needs, called
one by one (``UpstreamClient.send`` and ``_exchange``): the request built (``ClientRequest(...)``), a
connection from the connector (``BaseConnector.connect(req, traces, timeout)``), its parser set up
(``ResponseHandler.set_response_params``), the request written (``ClientRequest.send``) and the
answer's head read (``ClientResponse.start``), with the session's cleanup and errors on failure and
its one resend on a dropped connection. The rest of ``_request`` has nothing to do for a proxy that
follows no redirects, keeps no cookies, sends no auth, uses no proxy, environment or tracing and has
no total timeout, yet costs about a seventh of a proxied request's Python bytecodes
(tests.perf.opcount): ``_request`` itself, ``_prepare_headers``, its send closure, the timeout
handle, the URL, ssl and cookie steps. These are private parts of aiohttp, pinned in
tests/unit/test_third_party_internals.py. The session still owns the connector and serves the
callers that want its whole API (WebSocket handshakes, health checks).
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from collections.abc import AsyncIterable, Iterable
from operator import itemgetter
from typing import Any

import aiohttp
from aiohttp.helpers import TimerNoop
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from app.edge.upstream_protocol import BackendConnector

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
})
# Set by the transport for the backend's connection, not copied from the client. And Expect: the
# edge met a 100-continue expectation itself (the client's body comes once the gateway reads it),
# and a backend asked to meet it again would be waited for, body held back, until the read timeout
# (Envoy strips it too, unless proxy_100_continue).
NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}

RawHeaders = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The backend could not give an answer. ``status`` is what the client gets for it."""

    status = 502
    reason = "backend unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    reason = "backend timed out"


class UpstreamTlsError(UpstreamError):
    """The backend's TLS handshake failed: its certificate not trusted, not for its name, or the
    handshake refused. The message says which."""

    reason = "backend TLS handshake failed"


def connection_listed(value: bytes) -> frozenset[bytes]:
    """Header names that a Connection header's value declares hop-by-hop for this message."""
    return frozenset(token.strip().lower() for token in value.split(b","))


def forwardable_request_headers(headers: Iterable[tuple[bytes, bytes]],
                                dropped: frozenset[bytes] = NOT_FORWARDED,
                                has_connection: bool = True) -> list[tuple[str, str]]:
    """The client's headers minus ``dropped`` (by default the hop-by-hop ones) and those its
    Connection headers name, as aiohttp takes them. A caller that knows there is no Connection
    header says so (``has_connection=False``) and saves the scan for them."""
    headers = headers if isinstance(headers, list) else list(headers)
    if has_connection:
        connection = b",".join([v for n, v in headers if n == b"connection"])
        if connection:
            dropped = dropped | connection_listed(connection)
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers if n not in dropped]


# Control characters that HTTP/1.1 forbids in a field value (RFC 9110 section 5.5) and that the
# client edge therefore refuses to write; aiohttp lets them through from a backend.
_FORBIDDEN_IN_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_value = itemgetter(1)


def relayable(status: int, raw_headers: tuple[tuple[bytes, bytes], ...]) -> bool:
    """Whether the client edge can write this answer: a final status that HTTP/1.1 can carry
    (200-599: a 1xx is interim, and a 101 would switch protocols) and field values without control
    characters. The values are checked in one pass in C, joined by a tab (itself allowed)."""
    return 200 <= status <= 599 and _FORBIDDEN_IN_VALUE.search(b"\t".join(map(_value, raw_headers))) is None


def forwardable_response_headers(raw: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """The backend's headers minus hop-by-hop ones and those its Connection headers name,
    lower-cased as ASGI wants them. One pass; a second only for a Connection header that names
    more than "keep-alive" (which names only itself, and is what nearly every backend says)."""
    kept: RawHeaders = []
    naming: list[bytes] = []  # Connection values that may name other headers
    for name, value in raw:
        name = name.lower()
        if name not in HOP_BY_HOP:
            kept.append((name, value))
        elif name == b"connection" and value.lower() != b"keep-alive":
            naming.append(value)
    if not naming:
        return kept
    listed = connection_listed(b",".join(naming))
    return [(n, v) for n, v in kept if n not in listed]


# aiohttp adds these to a request that lacks them; a proxy forwards only what the client sent.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding")


class _ProxiedRequest(aiohttp.ClientRequest):
    """aiohttp's request, with two per-request steps made cheaper for what a proxy sends.

    Given ``skip_auto_headers``, aiohttp sorts it into a new CIMultiDict and copies the request's
    headers to check them, on every request; here every name it could add is skipped anyway, so the
    check has nothing to do. And it copies the headers one by one in Python, to put Host first and
    let a Host among them replace it; the proxy never forwards a Host (the backend's is made from
    the URL), so one copy in C does, and a Host that does come along still replaces the URL's in its
    place. Same headers as aiohttp's own steps (tests/unit/test_third_party_internals.py) and on the
    wire (tests/integration/test_proxy_hot_path.py)."""

    _SKIP = CIMultiDictProxy(CIMultiDict((name, None) for name in _NO_AUTO_HEADERS))

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = self._SKIP  # type: ignore[assignment]

    def update_headers(self, headers: Any) -> None:
        if not headers:
            super().update_headers(headers)
            return
        host = self.url.host_port_subcomponent
        assert host is not None  # an absolute URL: the proxy made it
        self.headers = CIMultiDict(Host=host)
        self.headers.extend(headers)
        if len(self.headers.getall("Host")) > 1:  # a Host among them: aiohttp's step lets it win
            super().update_headers(headers)


@functools.lru_cache(maxsize=4096)
def _origin(target_url: str) -> tuple[str, str, str]:
    """A target URL's scheme, authority and base path ("" or "/base"), split once."""
    parsed = URL(target_url)
    return parsed.scheme, parsed.raw_authority, target_url[len(f"{parsed.scheme}://{parsed.raw_authority}"):]


def backend_url(target_url: str, path: str, query: str) -> URL:
    """The URL a request goes to: the target's, then the request's path and query as received
    (still percent-encoded). Built from parts: yarl parses a URL string in Python, and a request
    with its own query string (every cache miss) would be parsed anew each time."""
    scheme, authority, base = _origin(target_url)
    return URL.build(scheme=scheme, authority=authority, path=base + path, query_string=query, encoded=True)


def client_timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    # No total: a large download may take long as long as bytes keep coming.
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


# RFC 9110 section 9.2.2: sending these twice has the effect of sending them once, so one cut off
# by a dropped connection before its answer began is sent again (RFC 9112 section 9.3.1, and what
# aiohttp's session does). Others are sent again only when they carry an Idempotency-Key, which
# makes a second delivery harmless.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# How a pooled connection fails when the backend closed it under the request: not a refused or
# timed-out connect (ClientConnectorError is a ClientOSError too), where nothing was sent.
_DROPPED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def _resendable(method: str, headers: list[tuple[str, str]], body: object, error: Exception) -> bool:
    """Whether the request may go out again, body permitting (a stream that was read cannot)."""
    if isinstance(error, aiohttp.ClientConnectorError):
        return False
    return method in _IDEMPOTENT or (
        (body is None or isinstance(body, bytes))
        and any(name.lower() == "idempotency-key" for name, _ in headers))


# No total timeout (client_timeout), so nothing for a timer to end: aiohttp's own timer for that case.
_NO_TIMER = TimerNoop()


def _tls_failure(error: aiohttp.ClientSSLError) -> str:
    """The handshake's own reason ("certificate verify failed: unable to get local issuer
    certificate"), without aiohttp's wrapping."""
    cause = getattr(error, "certificate_error", None) or getattr(error, "os_error", None) or error
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {cause.verify_message}"
    return str(getattr(cause, "reason", None) or cause)


class UpstreamClient:
    def __init__(self, max_connections: int = 512, keepalive: float = 4.0) -> None:
        self.max_connections = max_connections
        self.keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._open()

    def _open(self) -> None:
        connector = BackendConnector(limit=self.max_connections, keepalive_timeout=self.keepalive, ttl_dns_cache=60)
        self._session = session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            # The client's own headers are forwarded; aiohttp must not add its defaults.
            skip_auto_headers=_NO_AUTO_HEADERS, request_class=_ProxiedRequest)
        self._connector = connector
        self._new_request = functools.partial(_ProxiedRequest, loop=asyncio.get_running_loop(), timer=_NO_TIMER,
                                              session=session)
        # What the session's _request gives each answer's parser: its defaults, the body relayed as
        # sent (not decompressed), and read to the end of the connection when no length is given.
        self._parser_params: dict[str, Any] = {
            "read_until_eof": True, "auto_decompress": False, "read_bufsize": session._read_bufsize,
            "timeout_ceil_threshold": connector._timeout_ceil_threshold, "max_line_size": session._max_line_size,
            "max_field_size": session._max_field_size, "max_headers": session._max_headers}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        # Library callers (the seed's orchestrator example) never call start(): open on first use.
        if self._session is None:
            self._open()
        assert self._session is not None
        return self._session

    async def send(self, method: str, url: URL, headers: list[tuple[str, str]],
                   body: bytes | AsyncIterable[bytes] | None,
                   timeout: aiohttp.ClientTimeout, tls: ssl.SSLContext | bool = True) -> aiohttp.ClientResponse:
        """Send the request; the response's body is left unread for the caller to stream. A request
        that a dropped connection cut off before its answer began is sent again, once, on another
        connection when that is safe (see _IDEMPOTENT). ``tls``: how an https:// backend is
        verified (app/edge/tls.py backend_context)."""
        if self._session is None:
            self._open()
        try:
            request = self._new_request(method, url, headers=headers, data=body, ssl=tls)
            try:
                return await self._exchange(request, timeout)
            except _DROPPED as error:
                if not _resendable(request.method, headers, body, error):
                    raise
                # Once the failed attempt's writer is done, the body's payload says whether it was
                # read (a stream) or can go again (bytes), as the session decides.
                await request.close()
                sent = request._body
                if sent is not None and sent.consumed:
                    raise
                return await self._exchange(self._new_request(method, url, headers=headers, data=sent, ssl=tls),
                                            timeout)
        except (TimeoutError, aiohttp.ServerTimeoutError, aiohttp.ConnectionTimeoutError) as error:
            raise UpstreamTimeout(str(error) or "timeout") from error
        except aiohttp.ClientSSLError as error:
            raise UpstreamTlsError(_tls_failure(error)) from error
        except (aiohttp.ClientError, OSError) as error:
            raise UpstreamError(str(error) or type(error).__name__) from error

    async def _exchange(self, request: _ProxiedRequest, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """One attempt, as the session's _request makes it: a connection (pooled or new, within the
        connect timeout), the request written, the answer's head read (then each read within the
        read timeout); the connection closed if any of it fails, and the errors aiohttp raises."""
        try:
            connection = await self._connector.connect(request, [], timeout)
        except TimeoutError as error:
            raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {request.url}") from error
        assert connection.protocol is not None
        connection.protocol.set_response_params(timer=_NO_TIMER, skip_payload=request.method == "HEAD",
                                                read_timeout=timeout.sock_read, **self._parser_params)
        try:
            response = await request.send(connection)
            try:
                await response.start(connection)
            except BaseException:
                response.close()
                raise
        except BaseException as error:
            connection.close()
            # A socket's error that aiohttp did not name (a timeout stays one): named as the session does.
            if isinstance(error, OSError) and not isinstance(error, aiohttp.ClientError) \
                    and not (error.errno is None and isinstance(error, TimeoutError)):
                raise aiohttp.ClientOSError(*error.args) from error
            raise
        return response
