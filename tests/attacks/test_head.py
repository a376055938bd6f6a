"""Header abuse: what RFC 9112 and nginx refuse is refused (400, 414, 431, 501, 505) before any of it
reaches a backend, and the size limits hold while the head is read, not after."""

from __future__ import annotations

import select
import time

import pytest

from tests.attacks.conftest import edge_gateway
from tests.attacks.raw import RawBackend, RawClient, ask
from tests.support import GatewayThread


def request(head: bytes, target: bytes = b"/public/x", version: bytes = b"1.1", body: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/" + version + b"\r\n" + head + b"\r\n" + body


def refused(gateway: GatewayThread, data: bytes, status: int, error: str) -> dict:
    with RawClient(gateway.port) as client:
        answer = client.send(data).answer()
        assert (answer.status, answer.json()["error"]) == (status, error), answer.body
        assert answer.headers[b"content-type"] == b"application/json"
        assert answer.headers[b"connection"] == b"close"
        assert client.closed(within=5)
    return answer.json()


@pytest.mark.parametrize(("head", "error"), [
    (b"Host: gw\r\nHost: evil\r\n", "more than one Host header"),
    (b"Host: gw\r\nhost: gw\r\n", "more than one Host header"),
    (b"", "missing Host header"),
    (b"Host: evil.com/x\r\n", "invalid Host header"),
    (b"Host: a b\r\n", "invalid Host header"),
    (b"Host: gw:80:80\r\n", "invalid Host header"),
])
def test_host_must_be_one_and_valid(gateway: GatewayThread, raw_backend: RawBackend, head: bytes,
                                    error: str) -> None:
    refused(gateway, request(head), 400, error)
    assert raw_backend.raw == b""


def test_http_1_0_may_leave_host_out(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    assert ask(gateway.port, request(b"", version=b"1.0")).status == 200
    assert raw_backend.received[0].request_line == b"GET /public/x HTTP/1.1"


@pytest.mark.parametrize("head", [
    b"Host: gw\r\nX-A: 1\r\n folded\r\n",  # obs-fold
    b"Host: gw\r\nX-A : 1\r\n",  # whitespace before the colon
    b"Host: gw\r\nX@A: 1\r\n",  # not a token
    b"Host: gw\r\n: 1\r\n",  # no name
    b"Host: gw\r\nX-A: a\x00b\r\n",  # NUL in a value
    b"Host: gw\r\nX-A: a\x01b\r\n",
    b"Host: gw\r\nX-A: a\x7fb\r\n",
    b"Host: gw\r\nX-A: a\rX-B: b\r\n",  # a bare CR
    b"Host: gw\r\nX-A: a\nX-B: b\r\n",  # a bare LF
    b"Host: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n",
    b"Host: gw\r\nContent-Length: 1, 1\r\n",
    b"Host: gw\r\nContent-Length: -1\r\n",
])
def test_malformed_fields_are_400(gateway: GatewayThread, raw_backend: RawBackend, head: bytes) -> None:
    answer = refused(gateway, request(head), 400, "invalid HTTP request")
    assert answer["detail"]  # llhttp's reason
    assert raw_backend.raw == b""


@pytest.mark.parametrize(("line", "status", "error"), [
    (b"GET http://evil.example/public/x HTTP/1.1", 400, "request target names another host"),
    (b"GET http://user@gw/public/x HTTP/1.1", 400, "request target names another host"),
    (b"GET ftp://gw/public/x HTTP/1.1", 400, "invalid request target"),
    (b"OPTIONS * HTTP/1.1", 400, "invalid request target"),
    (b"CONNECT evil.example:443 HTTP/1.1", 400, "invalid request target"),
    (b"GET /public/x#frag HTTP/1.1", 400, "invalid request target"),
    (b"GET /public/x HTTP/2.0", 505, "HTTP version not supported"),
])
def test_request_targets_and_versions(gateway: GatewayThread, raw_backend: RawBackend, line: bytes, status: int,
                                      error: str) -> None:
    refused(gateway, line + b"\r\nHost: gw\r\n\r\n", status, error)
    assert raw_backend.raw == b""


def test_absolute_form_for_this_host_is_served_as_origin_form(gateway: GatewayThread,
                                                              raw_backend: RawBackend) -> None:
    assert ask(gateway.port, b"GET http://GW/public/%2e%2e/public/y?q=1 HTTP/1.1\r\nHost: gw\r\n\r\n").status == 200
    assert raw_backend.received[0].request_line == b"GET /public/y?q=1 HTTP/1.1"


# -- limits ---------------------------------------------------------------------------------------

def test_a_field_line_over_8_kib_is_431(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    assert ask(gateway.port, request(b"Host: gw\r\nX-Big: " + b"a" * 8000 + b"\r\n")).status == 200
    answer = refused(gateway, request(b"Host: gw\r\nX-Big: " + b"a" * 8200 + b"\r\n"), 431,
                     "request header field too large")
    assert answer["limit"] == 8192
    # Whether the field or the head is found too large first depends on how the bytes arrive.
    assert ask(gateway.port, request(b"Host: gw\r\nX-Big: " + b"a" * 100_000 + b"\r\n")).status == 431
    assert len(raw_backend.received) == 1


def test_more_than_100_fields_is_431(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(99))
    assert ask(gateway.port, request(b"Host: gw\r\n" + fields)).status == 200
    refused(gateway, request(b"Host: gw\r\n" + fields + b"X-One-More: v\r\n"), 431, "too many request header fields")
    many = b"".join(b"X-F%d: v\r\n" % i for i in range(1000))
    refused(gateway, request(b"Host: gw\r\n" + many), 431, "too many request header fields")
    assert len(raw_backend.received) == 1


def test_a_head_over_32_kib_is_431(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 7000) for i in range(5))
    refused(gateway, request(b"Host: gw\r\n" + fields), 431, "request header fields too large")
    assert raw_backend.raw == b""


def test_a_target_over_8_kib_is_414(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    assert ask(gateway.port, request(b"Host: gw\r\n", target=b"/public/x?" + b"q" * 8000)).status == 200
    answer = refused(gateway, request(b"Host: gw\r\n", target=b"/public/" + b"q" * 9000), 414,
                     "request target too long")
    assert answer["limit"] == 8192
    assert len(raw_backend.received) == 1


def test_limits_are_configurable(raw_backend: RawBackend) -> None:
    with edge_gateway(raw_backend, limits={"max_fields": 5, "max_target": 100}) as gateway:
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(5))
        refused(gateway, request(b"Host: gw\r\n" + fields), 431, "too many request header fields")
        refused(gateway, request(b"Host: gw\r\n", target=b"/public/" + b"q" * 100), 414, "request target too long")
        assert ask(gateway.port, request(b"Host: gw\r\n", target=b"/public/" + b"q" * 90)).status == 200


def test_a_2_mb_header_is_refused_after_the_limit_not_after_2_mb(gateway: GatewayThread,
                                                                 raw_backend: RawBackend) -> None:
    # Sent in 16 KiB pieces with a look for an answer after each: the 431 arrives once the head
    # passes 32 KiB, long before the 2 MB are sent, so the gateway never held them.
    with RawClient(gateway.port) as client:
        client.send(b"GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Huge: ")
        sent = 0
        answered = False
        while sent < 2 * 1024 * 1024 and not answered:
            try:
                client.send(b"a" * 16384)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 16384
            answered = bool(select.select([client.sock], [], [], 0.02)[0])
        assert answered, "no answer before the whole 2 MB were sent"
        assert sent <= 32768 + 4 * 16384
        answer = client.answer()
        assert (answer.status, answer.json()["error"]) == (431, "request header fields too large")
        assert client.closed(within=5)
    assert raw_backend.raw == b""


def test_a_slow_head_is_counted_across_reads(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    # Many fields, each a read of its own, under the per-field limit: the sum trips the head limit.
    with RawClient(gateway.port) as client:
        client.send(b"GET /public/x HTTP/1.1\r\nHost: gw\r\n")
        for i in range(40):
            try:
                client.send(b"X-F%d: %s\r\n" % (i, b"v" * 1000))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.002)
        answer = client.answer()
        assert answer.status == 431
    assert raw_backend.raw == b""
