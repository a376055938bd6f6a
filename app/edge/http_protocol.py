"""The client side's HTTP/1.1 protocol: uvicorn's httptools one, with one write per answer and the
request head checked before any of it reaches the app.

One write per answer: uvicorn writes an answer's status line and headers when the app sends
``http.response.start`` and its body when the app sends ``http.response.body``: two writes, so two
``send()`` system calls and two packets for every small answer. On loopback a send also runs the
receiving side's TCP work, and the two were the largest single cost of a proxied request (a fifth
of the gateway's CPU in a profile). Here the client connection's writes made in one step of the
event loop go out as one ``send()`` at the end of that step: headers and body together, as nginx
sends them. A streamed answer's headers still leave as soon as the step that made them ends, never
waiting for its body.

The head is checked once per request, in the parser's callbacks (app/edge/head.py has the rules),
and the size limits of ``server.limits`` are kept while it is read: a field line, a whole head, the
number of fields and the target are counted as they arrive, so a 2 MB header costs the gateway no
more than the limit before it is refused. The target's path is normalised (app/edge/paths.py) so
that the router, the control plane and the backend all read the same path. A refused request is
answered with the gateway's JSON error and the connection closed: after a malformed head, nothing
later on the connection can be trusted to be framed as the client meant it. A WebSocket handshake
is checked and normalised the same way, then the connection is handed to the WebSocket protocol
(app/edge/websocket_protocol.py).

Time, as nginx bounds it: a head must be whole within ``header_timeout`` of the connection's start
or of its first byte (a slowloris trickle does not reset that clock), a body may stall at most
``body_timeout`` while the gateway reads it, an idle connection closes after
``client_keepalive_timeout`` (uvicorn's keep-alive timer), and a process takes at most
``max_client_connections``: the next is answered 503 and closed at once.

A header whose name holds an underscore is dropped, as nginx drops it (``underscores_in_headers
off``): CGI and WSGI frameworks read ``X-Consumer_ID`` and ``X-Consumer-ID`` both as
``HTTP_X_CONSUMER_ID``, so a backend could take the underscore spelling for an identity header the
gateway strips or sets. It still counts towards the head's limits.

The scope this protocol makes differs from uvicorn's in two ways: ``raw_path`` is the normalised
path, percent-encoded (what the backend receives), and ``apigw.received_path`` holds the path as the
client sent it when that differs (for the access log). ``root_path`` and ``limit_concurrency`` are
not supported.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from operator import itemgetter
from typing import Any
from urllib.parse import unquote

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.config import ServerSection
from app.edge.coalescing import CoalescingTransport
from app.edge.head import (
    LOGGED_TARGET,
    REFUSED_BODY,
    EdgeRefusal,
    Refused,
    check_absolute_form,
    check_host,
    check_transfer_encoding,
    declares_body,
    refusal_bytes,
    valid_host,
)
from app.edge.paths import RECEIVED_PATH, BadPath, NormalPath, PathRules, is_plain, normalise
from app.edge.server import CONTROL_PREFIX

log = logging.getLogger("apigw.edge")

CONTROL_PREFIX_BYTES = (CONTROL_PREFIX + "/").encode()
# How long the rest of an unread request body is read and dropped before the connection closes.
LINGER_SECONDS = 5.0
# Header names on_header looks at (one set lookup per field for all of them).
_WATCHED = frozenset((b"host", b"expect", b"transfer-encoding"))
_name = itemgetter(0)
# A byte's value, not a one-byte string: ``bytes in bytes`` raises and clears a TypeError inside
# CPython before it searches, several times the cost of looking for a number.
_UNDERSCORE = ord("_")


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the gateway's edge rules; uvicorn's ``http`` takes
    ``functools.partial(GatewayHttpProtocol, server=config.server)`` (see ``edge_protocol``)."""

    def __init__(self, *args: Any, server: ServerSection | None = None,
                 on_refused: Callable[[EdgeRefusal], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        server = server or ServerSection()
        # Told of every answer this protocol makes itself (the access log and the request metrics).
        self.on_refused = on_refused
        self.path_rules = PathRules(merge_slashes=server.paths.merge_slashes,
                                    pass_encoded_slash=server.paths.encoded_slash == "pass")
        self.control_path_rules = PathRules(merge_slashes=server.paths.merge_slashes, pass_encoded_slash=True)
        limits = server.limits
        self.max_field_size = limits.max_field_size
        self.max_head_size = limits.max_head_size
        self.max_fields = limits.max_fields
        self.max_target = limits.max_target
        # The head being read, open from the request's first byte to the end of its fields, and
        # the bytes it has cost: the current read's size; then, for a head spanning reads, the
        # earlier reads' bytes counting all of its first read (at least the head's size, so a head
        # whose bound is under max_field_size needs no count of its own) and not counting it (at
        # most the head's size, safe to refuse on).
        self.head_open = False
        self.read_size = 0
        self.head_carried = 0
        self.head_read_whole = 0
        self.host: bytes | None = None
        # Time: a head must be whole within header_timeout of its start (or of the connection's);
        # a body may stall (no bytes while the app waits for them) for body_timeout.
        self.header_timeout = limits.header_timeout
        self.body_timeout = limits.body_timeout
        self.max_client_connections = limits.max_client_connections
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_read_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_client_connections:
            # Refused at once: a queued connection would hold a socket and the client's hopes.
            transport.write(refusal_bytes(503, "too many client connections", limit=self.max_client_connections))
            transport.close()
            if self.on_refused is not None:
                peer = transport.get_extra_info("peername")
                self.on_refused(EdgeRefusal(503, "too many client connections",
                                            str(peer[0]) if peer else "unknown", "-", b""))
            return
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self.head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:  # refused in connection_made: nothing was set up
            return
        for timer in (self.head_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        head_was_open = self.head_open
        self.read_size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._should_upgrade():
                self._upgrade_to_websocket(data[upgrade.args[0]:])
            else:
                # An upgrade the gateway does not make (h2c): the request was an HTTP/1.1 one
                # without a body (on_headers_complete refused any other), and so is what follows.
                self.data_received(data[upgrade.args[0]:])
            return
        except httptools.HttpParserCallbackError as error:
            refused = error.__context__
            if isinstance(refused, Refused):
                self.refuse(refused.status, refused.message, **refused.details)
            else:  # a bug in a callback: logged, and answered as the app's bugs are
                log.error("request head handling failed", exc_info=refused)
                self.refuse(500, "internal gateway error")
        except httptools.HttpParserError as error:
            self.refuse(400, "invalid HTTP request", detail=str(error))
        else:
            cycle = self.cycle
            if cycle is not None and cycle.more_body and not self.head_open:  # a body being read
                self.body_read_at = self.loop.time()
                if self.body_timer is None:
                    self.body_timer = self.loop.call_later(self.body_timeout, self._body_stalled)
            if self.head_open:  # a head not complete yet: count what it has cost so far
                if head_was_open:
                    self.head_carried += len(data)
                    self.head_read_whole += len(data)
                    if self.head_read_whole > self.max_head_size:
                        self.refuse(431, "request header fields too large", limit=self.max_head_size)
                else:
                    self.head_carried = len(data)
                    self.head_read_whole = 0

    def refuse(self, status: int, message: str, **details: Any) -> None:
        """Answer ``status`` with a JSON error and close. While an earlier pipelined request is
        still being answered, that answer is let finish and the connection closes after it."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.more_body:  # the fault is in a request after this one
                cycle.keep_alive = False
                self.flow.pause_reading()
                return
            # The fault is in this request's body: the app reading it is told the client is
            # gone, and its answer, if it makes one, is not sent; it logs this refusal.
            cycle.scope[REFUSED_BODY] = (status, message)  # type: ignore[literal-required]
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        if not self.transport.is_closing():
            self.transport.write(refusal_bytes(status, message, **details))
            self.transport.close()
            if self.on_refused is not None and (cycle is None or cycle.response_complete):
                self._report(status, message)

    def _report(self, status: int, message: str) -> None:
        """An answer no app made: one access line and one count, as the app's answers have."""
        url = self.url  # empty until the request line's target began (then the method is known)
        method = self.parser.get_method().decode("latin-1") if url else "-"
        client = self.client
        self.on_refused(EdgeRefusal(status, message, str(client[0]) if client else "unknown", method,  # type: ignore[misc]
                                    url[:LOGGED_TARGET]))

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # From a request's first byte its head is open: counted, and on the clock (a request that
        # stalls inside its method gets its 408 too, on a kept-alive connection as on a new one).
        self.head_open = True
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.max_target:
            raise Refused(414, "request target too long", limit=self.max_target)

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        # llhttp keeps trailing whitespace, which RFC 9110 section 5.5 excludes from the value.
        value = value.rstrip(b" \t")
        if name in _WATCHED:
            if name == b"host":
                if self.host is not None:
                    raise Refused(400, "more than one Host header")
                self.host = value
            elif name == b"expect":
                self.expect_100_continue = value.lower() == b"100-continue"
            else:
                check_transfer_encoding(value, self.parser.get_http_version())
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # uvicorn's, with the head checked and the path normalised before the app is started.
        url = self.url
        host = self.host
        self.head_open = False
        self.host = None
        self.head_timer.cancel()  # type: ignore[union-attr]
        self.head_timer = None
        carried = self.head_carried
        if carried + self.read_size > self.max_field_size:  # a head that may be over a limit
            self._check_head_size()
        if carried:
            self.head_carried = 0
        headers = self.headers
        if len(headers) > self.max_fields:
            raise Refused(431, "too many request header fields", limit=self.max_fields)
        if _UNDERSCORE in b"".join(map(_name, headers)):  # one scan in C for the whole head
            # In place: the scope holds this very list.
            headers[:] = [field for field in headers if _UNDERSCORE not in field[0]]
        parser = self.parser
        http_version = parser.get_http_version()
        if http_version != "1.1" and http_version != "1.0":
            raise Refused(505, "HTTP version not supported", version=http_version)
        if host is None or not valid_host(host):
            check_host(host, http_version)
        scope = self.scope
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        websocket = False
        if parser.should_upgrade():
            if declares_body(self.headers):
                # llhttp would not read the body of a request it takes as upgraded: it could
                # then be read as a request of its own (and a WebSocket's frames come after the
                # handshake, never in a body).
                raise Refused(400, "an upgrade request with a body is not supported")
            # Any other upgrade (h2c) is not made: the request is answered as an ordinary one.
            websocket = self._should_upgrade()
        if url[0] != 47:  # not origin-form ("/..."): absolute-form for this very host, or nothing
            check_absolute_form(url, host)
        try:
            target = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            raise Refused(400, "invalid request target") from None
        raw_path = target.path
        if not raw_path or raw_path[0] != 47 or target.fragment is not None:  # 47: "/"
            raise Refused(400, "invalid request target")
        if is_plain(raw_path):
            path = raw_path.decode("ascii")
        else:
            try:
                normal = normalise(raw_path, self.path_rules)
            except BadPath as error:
                normal = self._control_plane_path(raw_path)
                if normal is None:
                    raise Refused(400, "invalid path", reason=str(error)) from None
            scope[RECEIVED_PATH] = raw_path  # type: ignore[typeddict-unknown-key]
            path, raw_path = normal.decoded, normal.encoded
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = target.query or b""
        if websocket:  # checked like any request; data_received hands it to the WebSocket protocol
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # The connection cannot change protocols under an answer still being written.
                raise Refused(400, "a WebSocket handshake pipelined behind another request")
            return

        existing_cycle = self.cycle
        self.cycle = RequestResponseCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(self.cycle, self.app)
        else:
            # Pipelined requests wait their turn.
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, self.app))

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle.more_body and not self.transport.is_closing():
            # Answered before its body came (a 413 on the declared length, a 429, a 404): the
            # body is not read, so the connection cannot carry another request.
            self._close_unread()
            return
        super().on_response_complete()

    def _upgrade_to_websocket(self, rest: bytes) -> None:
        """Hand the connection to the WebSocket protocol (uvicorn's handle_websocket_upgrade, except
        that the handshake it reads names the path as normalised here, the scope keeps both forms of
        it, and bytes the client sent after the head are kept rather than dropped)."""
        self.connections.discard(self)
        scope = self.scope
        target = scope["raw_path"]
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        output = [scope["method"].encode(), b" ", target, b" HTTP/1.1\r\n"]
        for name, value in scope["headers"]:
            output += [name, b": ", value, b"\r\n"]
        output.append(b"\r\n")
        output.append(rest)
        protocol = self.ws_protocol_class(  # type: ignore[call-arg, misc]
            config=self.config, server_state=self.server_state, app_state=self.app_state)
        protocol.http_scope = scope  # type: ignore[union-attr]
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.data_received(b"".join(output))

    def _close_unread(self) -> None:
        """Close a connection whose request body was left unread, the answer first: our side is
        shut for writing after it, and what the client still sends is read and dropped until it
        closes or LINGER_SECONDS pass (nginx's lingering close), so the kernel does not reset
        the connection under an answer the client has not read yet."""
        self.server_state.total_requests += 1
        self.connections.discard(self)
        for timer in (self.head_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = None
        self.cycle.disconnected = True
        self.cycle.message_event.set()
        transport = self.transport
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.set_protocol(_Lingering(transport, self.loop))

    # -- time -----------------------------------------------------------------------------------

    def _head_timed_out(self) -> None:
        """No whole head within header_timeout: 408 if a request line had begun, then close
        (a connection that never sent one is closed without an answer, as nginx does)."""
        self.head_timer = None
        if self.transport.is_closing():
            return
        if self.head_open:
            self.refuse(408, "request head not received in time", limit=self.header_timeout)
        else:
            self.transport.close()

    def _body_stalled(self) -> None:
        """Looks at a body being read every body_timeout: 408 and close once the client has sent
        nothing for that long while the gateway was reading (not while the client waits for its
        100 Continue, or while the gateway has paused reading)."""
        self.body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.disconnected or self.transport.is_closing():
            return
        now = self.loop.time()
        if cycle.waiting_for_100_continue or self.flow.read_paused:
            self.body_read_at = now
        idle = now - self.body_read_at
        if idle >= self.body_timeout:
            self.refuse(408, "request body not received in time", limit=self.body_timeout)
        else:
            self.body_timer = self.loop.call_later(self.body_timeout - idle, self._body_stalled)

    def _check_head_size(self) -> None:
        size = len(self.url)
        for name, value in self.headers:
            field = len(name) + len(value)
            if field > self.max_field_size:
                raise Refused(431, "request header field too large", limit=self.max_field_size)
            size += field + 4
        if size > self.max_head_size:
            raise Refused(431, "request header fields too large", limit=self.max_head_size)

    def _control_plane_path(self, raw_path: bytes) -> NormalPath | None:
        """The admin API names routes by key, "/" included (``/_gateway/admin/routes/%2Fa%2F*``),
        and no backend sees its paths: there, %2F and %5C are decoded as any ASGI app expects."""
        if not raw_path.startswith(CONTROL_PREFIX_BYTES):
            return None
        try:
            normal = normalise(raw_path, self.control_path_rules)
        except BadPath:
            return None
        if not normal.decoded.startswith(CONTROL_PREFIX + "/"):
            return None
        return NormalPath(unquote(normal.encoded.decode("ascii")), normal.encoded)


class _Lingering(asyncio.Protocol):
    """What is left of a connection closed with its request body unread: bytes read and dropped."""

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.timer = loop.call_later(LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        self.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()


def edge_protocol(server: ServerSection,
                  on_refused: Callable[[EdgeRefusal], None] | None = None) -> functools.partial[GatewayHttpProtocol]:
    """What uvicorn's ``http`` setting takes: the protocol class with this config's rules, telling
    ``on_refused`` of each answer it makes itself."""
    return functools.partial(GatewayHttpProtocol, server=server, on_refused=on_refused)
