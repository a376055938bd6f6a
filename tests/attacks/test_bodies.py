"""Expect: 100-continue end to end, and oversized bodies: declared ones refused before a byte of them
is read, chunked ones refused when they pass the limit, and the backend given no request of them."""

from __future__ import annotations

import time

from tests.attacks.raw import RawBackend, RawClient
from tests.support import GatewayThread


def expecting(target: bytes, length: int) -> bytes:
    return (b"POST " + target + b" HTTP/1.1\r\nHost: gw\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % length)


def test_the_body_follows_100_continue_to_the_backend_and_its_answer_back(gateway: GatewayThread,
                                                                         raw_backend: RawBackend) -> None:
    with RawClient(gateway.port) as client:
        client.send(expecting(b"/public/upload", 11))
        assert client.answer().status == 100  # asked for before the client sends the body
        client.send(b"hello world")
        answer = client.answer()
        assert answer.status == 200 and answer.json() == {"n": 1}
        # and the connection serves the next request
        assert client.send(b"GET /public/next HTTP/1.1\r\nHost: gw\r\n\r\n").answer().status == 200
    first = raw_backend.received[0]
    assert first.request_line == b"POST /public/upload HTTP/1.1"
    assert first.body == b"hello world"
    assert first.header(b"content-length") == [b"11"]
    assert first.header(b"expect") == []  # the gateway met the expectation itself


def test_a_declared_body_over_the_limit_is_413_without_100_or_reading(gateway: GatewayThread,
                                                                      raw_backend: RawBackend) -> None:
    with RawClient(gateway.port) as client:
        started = time.monotonic()
        client.send(expecting(b"/small/upload", 100 * 1024 * 1024))
        answer = client.answer()
        assert (answer.status, answer.json()) == (413, {"error": "request body too large", "limit": 1000})
        assert time.monotonic() - started < 2
        assert client.closed(within=2)  # the body that was never asked for is not waited for
    assert raw_backend.raw == b""


def test_a_declared_body_over_the_limit_sent_anyway_gets_its_413(gateway: GatewayThread,
                                                                 raw_backend: RawBackend) -> None:
    # No Expect: the client streams 2 MB at once. The 413 still reaches it (the rest is read and
    # dropped until it stops, rather than the connection reset under the answer).
    with RawClient(gateway.port) as client:
        client.send(b"POST /small/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 2097152\r\n\r\n")
        sent = 0
        try:
            while sent < 2 * 1024 * 1024:
                client.send(b"x" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = client.answer()
        assert answer.status == 413
        assert client.closed(within=6)
    assert raw_backend.raw == b""


def test_a_chunked_body_over_the_limit_is_413_and_no_request_reaches_the_backend(gateway: GatewayThread,
                                                                                raw_backend: RawBackend) -> None:
    with RawClient(gateway.port) as client:
        client.send(b"POST /small/upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
                    b"Expect: 100-continue\r\n\r\n")
        assert client.answer().status == 100  # its size is not known before it comes
        try:
            for _ in range(10):
                client.send(b"200\r\n" + b"y" * 512 + b"\r\n")
            client.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = client.answer()
        assert (answer.status, answer.json()["error"]) == (413, "request body too large")
    time.sleep(0.2)
    assert raw_backend.received == []  # at most the start of a body that never ended
