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

The head: llhttp (under httptools) already refuses the framing attacks (Content-Length with
Transfer-Encoding, repeated Content-Length, obs-fold, bad characters in names and values, raw
control characters in the target). What it lets through is checked here, once per request, in the
parser's callbacks: the request target's form and its path, normalised (app/edge/paths.py) so that
the router, the control plane and the backend all read the same path. A refused request is
answered with the gateway's JSON error and the connection closed: after a malformed head, nothing
later on the connection can be trusted to be framed as the client meant it.

The scope this protocol makes differs from uvicorn's in two ways: ``raw_path`` is the normalised
path, percent-encoded (what the backend receives), and ``apigw.received_path`` holds the path as the
client sent it when that differs (for the access log). ``root_path`` and ``limit_concurrency`` are
not supported.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any
from urllib.parse import unquote

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from app.config import ServerSection
from app.edge.coalescing import CoalescingTransport
from app.edge.paths import RECEIVED_PATH, BadPath, NormalPath, PathRules, is_plain, normalise
from app.edge.server import CONTROL_PREFIX

log = logging.getLogger("apigw.edge")

CONTROL_PREFIX_BYTES = (CONTROL_PREFIX + "/").encode()


class Refused(Exception):
    """A request the edge answers itself, then closes the connection."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def refusal_bytes(status: int, message: str, **details: Any) -> bytes:
    """A whole answer, as the gateway's other errors look (app/pipeline/exchange.py error_reply)."""
    body = orjson.dumps({"error": message, **details})
    return b"".join((STATUS_LINE[status], b"content-type: application/json\r\ncontent-length: ",
                     str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body))


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the gateway's edge rules; uvicorn's ``http`` takes
    ``functools.partial(GatewayHttpProtocol, server=config.server)`` (see ``edge_protocol``)."""

    def __init__(self, *args: Any, server: ServerSection | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        server = server or ServerSection()
        self.path_rules = PathRules(merge_slashes=server.paths.merge_slashes,
                                    pass_encoded_slash=server.paths.encoded_slash == "pass")
        self.control_path_rules = PathRules(merge_slashes=server.paths.merge_slashes, pass_encoded_slash=True)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserCallbackError as error:
            refused = error.__context__
            if isinstance(refused, Refused):
                self.refuse(refused.status, refused.message, **refused.details)
            else:  # a bug in a callback: logged, and answered as the app's bugs are
                log.error("request head handling failed", exc_info=refused)
                self.refuse(500, "internal gateway error")
        except httptools.HttpParserError as error:
            self.refuse(400, "invalid HTTP request", detail=str(error))

    def refuse(self, status: int, message: str, **details: Any) -> None:
        """Answer ``status`` with a JSON error and close. While an earlier pipelined request is
        still being answered, that answer is let finish and the connection closes after it."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        if not self.transport.is_closing():
            self.transport.write(refusal_bytes(status, message, **details))
            self.transport.close()

    # -- parser callbacks -----------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        # uvicorn's, with the target checked and its path normalised before the app is started.
        parser = self.parser
        http_version = parser.get_http_version()
        scope = self.scope
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        try:
            target = httptools.parse_url(self.url)
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


def edge_protocol(server: ServerSection) -> functools.partial[GatewayHttpProtocol]:
    """What uvicorn's ``http`` setting takes: the protocol class with this config's rules."""
    return functools.partial(GatewayHttpProtocol, server=server)
