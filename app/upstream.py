"""The transport to backends: one aiohttp session per process, and the HTTP header rules of a proxy.

Policy (which target, retries, breakers) lives in the orchestrator; this module only sends a request
and hands back the response unread, so the caller can stream it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
})
# Set by the transport for the backend's connection, not copied from the client.
NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length"}

RawHeaders = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The backend could not give an answer. ``status`` is what the client gets for it."""

    status = 502
    reason = "backend unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    reason = "backend timed out"


def connection_listed(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names that a Connection header declares hop-by-hop for this message."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return frozenset(named)


def forwardable_request_headers(headers: Iterable[tuple[bytes, bytes]],
                                dropped: frozenset[bytes] = NOT_FORWARDED) -> list[tuple[str, str]]:
    """The client's headers minus ``dropped`` (by default the hop-by-hop ones) and those its
    Connection header names, as aiohttp takes them."""
    headers = headers if isinstance(headers, list) else list(headers)
    for name, _ in headers:
        if name == b"connection":
            dropped = dropped | connection_listed(headers)
            break
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers if n not in dropped]


def forwardable_response_headers(raw: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """The backend's headers minus hop-by-hop ones, lower-cased as ASGI wants them."""
    pairs: RawHeaders = []
    listed: set[bytes] = set()
    for name, value in raw:
        name = name.lower()
        if name in HOP_BY_HOP:
            # "keep-alive", what nearly every backend says, names only itself: nothing to parse.
            if name == b"connection" and value.lower() != b"keep-alive":
                listed.update(token.strip().lower() for token in value.split(b","))
            continue
        pairs.append((name, value))
    # A second pass only when Connection named a header that is still in the list.
    listed.difference_update(HOP_BY_HOP)
    if listed:
        return [(n, v) for n, v in pairs if n not in listed]
    return pairs


# aiohttp adds these to a request that lacks them; a proxy forwards only what the client sent.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding")


class _ProxiedRequest(aiohttp.ClientRequest):
    """aiohttp's request, with the skip list of auto headers built once instead of per request.

    Given ``skip_auto_headers``, aiohttp sorts it into a new CIMultiDict and copies the request's
    headers to check them, on every request; here every name it could add is skipped anyway, so the
    check has nothing to do. Same headers on the wire (tests/integration/test_proxy_hot_path.py)."""

    _SKIP = CIMultiDictProxy(CIMultiDict((name, None) for name in _NO_AUTO_HEADERS))

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = self._SKIP  # type: ignore[assignment]


def client_timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    # No total: a large download may take long as long as bytes keep coming.
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


class UpstreamClient:
    def __init__(self, max_connections: int = 512, keepalive: float = 30.0) -> None:
        self.max_connections = max_connections
        self.keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._open()

    def _open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=self.keepalive,
                                         ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            # The client's own headers are forwarded; aiohttp must not add its defaults.
            skip_auto_headers=_NO_AUTO_HEADERS, request_class=_ProxiedRequest)

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

    async def send(self, method: str, url: str, headers: list[tuple[str, str]],
                   body: bytes | AsyncIterable[bytes] | None,
                   timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """Send the request; the response's body is left unread for the caller to stream."""
        try:
            return await self.session.request(
                method, URL(url, encoded=True), headers=headers, data=body, timeout=timeout,
                allow_redirects=False, compress=None, chunked=None)
        except (aiohttp.ServerTimeoutError, aiohttp.ConnectionTimeoutError, asyncio.TimeoutError) as error:
            raise UpstreamTimeout(str(error) or "timeout") from error
        except (aiohttp.ClientError, OSError) as error:
            raise UpstreamError(str(error) or type(error).__name__) from error
