"""The rules of a request head that llhttp leaves to its user, and the answer to a head refused.

llhttp (under httptools) refuses the framing attacks itself: Content-Length with Transfer-Encoding,
repeated or malformed Content-Length, obs-fold, whitespace before a colon, characters outside a
token in names and control characters in values and in the target. Left to the gateway, as nginx
and RFC 9112 want them: exactly one valid ``Host`` (section 3.2), an absolute-form target only
for that host, ``Transfer-Encoding`` only ``chunked`` and never on HTTP/1.0 (nginx: 501, 400),
HTTP/1.0 or 1.1 only, and the size limits (``server.limits``; RFC 6585 section 5's 431, and 414).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

# RFC 3986 section 3.2.2 and 3.2.3: an IP literal or a registered name (IPv4 included), an optional port.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{0,5})?")
_ABSOLUTE = re.compile(rb"https?://([^/?#]*)", re.IGNORECASE)


# The scope key under which the protocol tells a running app that it refused the request's body
# (status, reason): the app's access line then says so rather than "the client went away".
REFUSED_BODY = "apigw.refused"
# How much of a refused target the access log keeps (a 414's is over 8 KiB).
LOGGED_TARGET = 2048


class EdgeRefusal(NamedTuple):
    """A request the protocol answered itself before any app saw it: its access line and count."""

    status: int
    reason: str
    client_addr: str
    method: str  # "-" when the request line did not get that far
    target: bytes  # as received, cut to LOGGED_TARGET bytes


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


# A match (true) for a valid Host value; the regex's own method, so checking costs no Python call.
valid_host = _HOST.fullmatch


def check_host(host: bytes | None, http_version: str) -> None:
    """For a request whose Host is missing or not ``valid_host``."""
    if host is not None:
        raise Refused(400, "invalid Host header")
    if http_version == "1.1":
        raise Refused(400, "missing Host header")


def declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"transfer-encoding" or (name == b"content-length" and value != b"0")
               for name, value in headers)


def check_absolute_form(url: bytes, host: bytes | None) -> None:
    """An absolute-form target (``GET http://host/path``) is taken only for the host the request
    names in Host: the gateway is no forward proxy."""
    match = _ABSOLUTE.match(url)
    if match is None:
        raise Refused(400, "invalid request target")
    if host is None or match.group(1).lower() != host.lower():
        raise Refused(400, "request target names another host")


def check_transfer_encoding(value: bytes, http_version: str) -> None:
    if http_version == "1.0":
        raise Refused(400, "Transfer-Encoding in an HTTP/1.0 request")
    if value.lower() != b"chunked":
        raise Refused(501, "transfer coding not implemented", accepted="chunked")
