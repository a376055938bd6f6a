"""Request smuggling: a request is framed one way only. Whatever a front proxy and a backend could
read differently (CL.TE, TE.CL, TE.TE obfuscations, bodies on upgrades, malformed chunks) is
refused before a byte reaches the backend, as nginx refuses it; what is framed right reaches the
backend as exactly the requests the client sent."""

from __future__ import annotations

import pytest

from tests.attacks.raw import RawBackend, RawClient, ask
from tests.support import GatewayThread

SMUGGLED = b"GET /public/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n"


def post(fields: bytes, body: bytes, version: bytes = b"1.1") -> bytes:
    return b"POST /public/x HTTP/" + version + b"\r\nHost: gw\r\n" + fields + b"\r\n" + body


def dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out, body = out + body[:size], body[size + 2:]


def refused(gateway: GatewayThread, data: bytes, status: int) -> None:
    with RawClient(gateway.port) as client:
        answer = client.send(data).answer()
        assert answer.status == status, answer.body
        assert answer.headers[b"connection"] == b"close"
        assert client.closed(within=5)


@pytest.mark.parametrize(("fields", "body", "status"), [
    # CL.TE and TE.CL: both framings at once.
    (b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED, 400),
    (b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"8\r\n" + SMUGGLED[:8] + b"\r\n0\r\n\r\n", 400),
    # TE.TE: a Transfer-Encoding one reader might take and another ignore.
    (b"Transfer-Encoding: xchunked\r\nContent-Length: 6\r\n", b"0\r\n\r\n" + SMUGGLED, 501),
    (b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED, 400),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", b"0\r\n\r\n" + SMUGGLED, 400),
    (b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n" + SMUGGLED, 400),
    (b"Transfer-Encoding: identity, chunked\r\n", b"0\r\n\r\n" + SMUGGLED, 501),
    (b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n" + SMUGGLED, 501),
    (b"Transfer-Encoding:\x0bchunked\r\n", b"0\r\n\r\n" + SMUGGLED, 400),
    (b"Transfer-Encoding: chunked\r\n X: y\r\n", b"0\r\n\r\n" + SMUGGLED, 400),  # obs-fold
    # Chunks that a lenient reader would size differently.
    (b"Transfer-Encoding: chunked\r\n", b"3\nabc\r\n0\r\n\r\n" + SMUGGLED, 400),
    (b"Transfer-Encoding: chunked\r\n", b"3x\r\nabc\r\n0\r\n\r\n" + SMUGGLED, 400),
    (b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffffff\r\nabc\r\n0\r\n\r\n", 400),
    (b"Transfer-Encoding: chunked\r\n", b"3\r\nabcX\r\n0\r\n\r\n" + SMUGGLED, 400),
    # A body on an upgrade request, which the parser would not read as a body.
    (b"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 41\r\n", SMUGGLED, 400),
])
def test_ambiguous_framing_is_refused(gateway: GatewayThread, raw_backend: RawBackend, fields: bytes, body: bytes,
                                      status: int) -> None:
    refused(gateway, post(fields, body), status)
    assert raw_backend.raw == b""


def test_transfer_encoding_on_http_1_0_is_400(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    refused(gateway, post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", version=b"1.0"), 400)
    assert raw_backend.raw == b""


def test_a_request_inside_a_body_stays_a_body(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    with RawClient(gateway.port) as client:
        client.send(post(b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED))
        assert client.answer().status == 200
    [received] = raw_backend.received
    assert received.request_line == b"POST /public/x HTTP/1.1"
    assert received.body == SMUGGLED
    assert received.header(b"content-length") == [b"%d" % len(SMUGGLED)]


def test_chunked_in_any_case_is_read_as_chunked(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    with RawClient(gateway.port) as client:
        client.send(post(b"Transfer-Encoding: CHUNKED\r\n", body) + SMUGGLED)
        assert client.answer().status == 200
        assert client.answer().status == 200  # the pipelined request after the body is a request
    first, second = raw_backend.received
    assert first.request_line == b"POST /public/x HTTP/1.1"
    forwarded = dechunk(first.body) if first.header(b"transfer-encoding") == [b"chunked"] else first.body
    assert forwarded == b"hello world"
    assert second.request_line == b"GET /public/smuggled HTTP/1.1"


def test_an_upgrade_without_a_body_is_an_ordinary_request(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    # curl --http2 on http:// asks for h2c this way; the gateway answers in HTTP/1.1, and reads
    # what follows as the next request.
    with RawClient(gateway.port) as client:
        client.send(b"GET /public/a HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                    b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n" + SMUGGLED)
        assert client.answer().status == 200
        assert client.answer().status == 200
    first, second = raw_backend.received
    assert first.request_line == b"GET /public/a HTTP/1.1"
    assert not first.header(b"upgrade") and not first.header(b"http2-settings")
    assert second.request_line == b"GET /public/smuggled HTTP/1.1"


def test_declared_lengths_are_kept_exactly(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    # Content-Length 3 and 8 bytes sent: the other 5 are the start of the next request, not body.
    answer = ask(gateway.port, post(b"Content-Length: 3\r\n", b"abcGARBAGE"))
    assert answer.status == 200
    [received] = raw_backend.received
    assert received.body == b"abc"
