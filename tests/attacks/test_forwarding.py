"""What the gateway forwards: hop-by-hop abuse (a Connection header naming the headers the gateway
sets or reads), CRLF in any value that reaches the backend's head, and header names with underscores
(which a CGI or WSGI backend reads as the dashed name)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.config import parse_config
from tests.attacks.conftest import routes
from tests.attacks.raw import RawBackend, ask
from tests.support import GatewayThread

KEY = "a-long-random-key-of-16+-chars"


@pytest.fixture
def limited(raw_backend: RawBackend) -> Iterator[GatewayThread]:
    config = parse_config({
        "server": {"access_log": False},
        "router": {"routes": routes(raw_backend)},
        "rate_limiter": {"default": {"requests_per_minute": 1000},
                         "api_keys": [{"key": KEY, "client_id": "acme"}],
                         "clients": {"acme": {"requests_per_minute": 1}}},
    }, {})
    with GatewayThread(config) as gateway:
        yield gateway


def test_connection_cannot_remove_the_headers_the_gateway_sets(gateway: GatewayThread,
                                                               raw_backend: RawBackend) -> None:
    answer = ask(gateway.port, b"GET /public/x HTTP/1.1\r\nHost: gw\r\n"
                 b"Connection: keep-alive, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Request-ID, Host\r\n"
                 b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n"
                 b"X-Request-ID: forged-id\r\nX-Hop: 1\r\nConnection: X-Hop\r\n\r\n")
    assert answer.status == 200
    [received] = raw_backend.received
    assert received.header(b"x-forwarded-for") == [b"6.6.6.6, 127.0.0.1"]  # the client's claim, then the peer
    assert received.header(b"x-forwarded-proto") == [b"http"]
    assert received.header(b"x-forwarded-host") == [b"gw"]
    assert received.header(b"x-request-id") == [answer.headers[b"x-request-id"]]
    assert received.header(b"host") == [b"127.0.0.1:%d" % raw_backend.port]
    assert received.header(b"x-hop") == [] and received.header(b"connection") in ([], [b"keep-alive"])


def test_connection_cannot_hide_the_api_key_from_the_rate_limit(limited: GatewayThread,
                                                                raw_backend: RawBackend) -> None:
    first = ask(limited.port, b"GET /public/a HTTP/1.1\r\nHost: gw\r\nX-API-Key: " + KEY.encode() + b"\r\n\r\n")
    assert first.status == 200
    second = ask(limited.port, b"GET /public/b HTTP/1.1\r\nHost: gw\r\nConnection: X-API-Key\r\nX-API-Key: "
                 + KEY.encode() + b"\r\n\r\n")
    assert second.status == 429 and second.json()["client_id"] == "acme"
    assert [r.target for r in raw_backend.received] == [b"/public/a"]


def test_connection_naming_the_framing_headers_keeps_the_framing(gateway: GatewayThread,
                                                                 raw_backend: RawBackend) -> None:
    assert ask(gateway.port, b"POST /public/x HTTP/1.1\r\nHost: gw\r\nConnection: Content-Length, Transfer-Encoding"
               b"\r\nContent-Length: 5\r\n\r\nhello").status == 200
    [received] = raw_backend.received
    assert received.header(b"content-length") == [b"5"] and received.body == b"hello"


@pytest.mark.parametrize("head", [
    b"GET /public/x?a=%0d%0aX-Injected:%201&b=\\r\\n HTTP/1.1\r\nHost: gw\r\n\r\n",  # the query is forwarded as is
    b"GET /public/x HTTP/1.1\r\nHost: gw%0d%0aX-Injected:1\r\n\r\n",  # Host becomes X-Forwarded-Host
    b"GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Request-ID: a%0d%0aX-Injected: 1\r\n\r\n",
    b"GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: 1.2.3.4%0d%0aX-Injected: 1\r\n\r\n",
])
def test_encoded_crlf_stays_encoded_in_what_is_forwarded(gateway: GatewayThread, raw_backend: RawBackend,
                                                         head: bytes) -> None:
    assert ask(gateway.port, head).status == 200
    [received] = raw_backend.received
    assert received.header(b"x-injected") == []
    assert b"\r\nX-Injected" not in received.head and b"\nX-Injected" not in received.head


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Request-ID: a\rX-Injected: 1\r\n\r\n", 400),
    (b"GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: 1.2.3.4\nX-Injected: 1\r\n\r\n", 400),
    (b"GET /public/x%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    # A CRLF inside the request line ends it: an HTTP/0.9 request line, which is not served.
    (b"GET /public/x\r\nX-Injected: 1 HTTP/1.1\r\nHost: gw\r\n\r\n", 505),
])
def test_raw_or_decoded_crlf_in_the_head_is_refused(gateway: GatewayThread, raw_backend: RawBackend,
                                                    head: bytes, status: int) -> None:
    assert ask(gateway.port, head).status == status
    assert raw_backend.raw == b""


# -- header names with underscores ------------------------------------------------------------

_UNDERSCORED = (b"X-Consumer_ID: admin\r\nX_Client_ID: enterprise_tier\r\nX-Forwarded_For: 6.6.6.6\r\n"
                b"X-Request_ID: forged\r\n_: x\r\nx-api_key: stolen\r\n")


def _fields_but_request_id(received: bytes) -> bytes:
    """The head's field lines as received, but the request id (one per request)."""
    lines = received.split(b"\r\n")[1:]
    return b"\r\n".join(line for line in lines if not line.lower().startswith(b"x-request-id:"))


def test_header_names_with_underscores_never_reach_the_backend(gateway: GatewayThread,
                                                               raw_backend: RawBackend) -> None:
    # WSGI and CGI read X-Consumer_ID as X-Consumer-ID (HTTP_X_CONSUMER_ID): the gateway drops it,
    # as nginx does, and the backend receives exactly what the same request without them makes.
    tail = b" HTTP/1.1\r\nHost: gw\r\nX-Kept: 1\r\n"
    assert ask(gateway.port, b"GET /public/a" + tail + _UNDERSCORED + b"X-Also-Kept: 2\r\n\r\n").status == 200
    assert ask(gateway.port, b"GET /public/b" + tail + b"X-Also-Kept: 2\r\n\r\n").status == 200
    with_them, without = raw_backend.received
    assert _fields_but_request_id(with_them.head) == _fields_but_request_id(without.head)
    assert with_them.header(b"x-kept") == [b"1"] and with_them.header(b"x-also-kept") == [b"2"]
    assert all(b"_" not in name for name, _ in with_them.headers())
    assert b"6.6.6.6" not in with_them.head and b"forged" not in with_them.head


def test_a_dropped_header_still_counts_towards_the_head_limits(gateway: GatewayThread,
                                                               raw_backend: RawBackend) -> None:
    too_many = b"".join(b"X-F_%d: v\r\n" % i for i in range(101))
    assert ask(gateway.port, b"GET /public/x HTTP/1.1\r\nHost: gw\r\n" + too_many + b"\r\n").status == 431
    too_long = b"X-Big_One: " + b"a" * 9000 + b"\r\n"
    assert ask(gateway.port, b"GET /public/x HTTP/1.1\r\nHost: gw\r\n" + too_long + b"\r\n").status == 431
    assert raw_backend.raw == b""
