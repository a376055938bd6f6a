"""The proxy's header rules, exactly: what is forwarded, in which order, and what replaces what.

These pin the behaviour that hot-path rewrites of app/edge/upstream.py and app/pipeline/orchestrator.py must keep
(issue 8); the end-to-end view of the same rules is in tests/integration/test_proxy.py.
"""

from __future__ import annotations

from app.pipeline.exchange import Exchange
from app.orchestrator import ApiGatewayOrchestrator
from app.edge.upstream import forwardable_request_headers, forwardable_response_headers


def _exchange(headers: list[tuple[bytes, bytes]], request_id: str = "rid-1") -> Exchange:
    return Exchange(method="GET", path="/a", raw_path=b"/a", query_string=b"", headers=headers,
                    client_addr="10.0.0.9", scheme="https", request_id=request_id)


def test_response_headers_drop_hop_by_hop_and_connection_listed_keep_order_and_repeats() -> None:
    raw = [(b"Server", b"nginx"), (b"Connection", b"keep-alive, X-Hop"), (b"Set-Cookie", b"a=1"),
           (b"Keep-Alive", b"timeout=5"), (b"X-Hop", b"secret"), (b"Transfer-Encoding", b"chunked"),
           (b"Set-Cookie", b"b=2"), (b"Content-Length", b"10"), (b"X-Kept", b"yes")]
    assert forwardable_response_headers(raw) == [
        (b"server", b"nginx"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"),
        (b"content-length", b"10"), (b"x-kept", b"yes")]


def test_response_headers_without_connection_header_only_lose_hop_by_hop() -> None:
    raw = [(b"Content-Type", b"application/json"), (b"Upgrade", b"h2c"), (b"Proxy-Authenticate", b"Basic"),
           (b"Trailer", b"x"), (b"TE", b"trailers"), (b"Date", b"today")]
    assert forwardable_response_headers(raw) == [(b"content-type", b"application/json"), (b"date", b"today")]


def test_response_connection_tokens_are_case_blind_and_trimmed() -> None:
    raw = [(b"connection", b" Close ,  X-Private "), (b"x-private", b"1"), (b"close", b"2"), (b"x-public", b"3")]
    assert forwardable_response_headers(raw) == [(b"x-public", b"3")]


def test_response_headers_named_by_a_later_connection_header_are_dropped_too() -> None:
    """A name listed by any Connection header goes, wherever it stands; "keep-alive" alone names nothing."""
    raw = [(b"X-Early", b"1"), (b"Connection", b"Keep-Alive"), (b"X-Kept", b"2"), (b"Connection", b"x-early")]
    assert forwardable_response_headers(raw) == [(b"x-kept", b"2")]
    assert forwardable_response_headers(raw[:3]) == [(b"x-early", b"1"), (b"x-kept", b"2")]


def test_request_headers_drop_hop_by_hop_host_length_and_connection_listed() -> None:
    headers = [(b"host", b"gw:8080"), (b"connection", b"keep-alive, x-secret"), (b"x-secret", b"1"),
               (b"content-length", b"3"), (b"te", b"trailers"), (b"accept", b"*/*"), (b"x-two", b"a"),
               (b"x-two", b"b")]
    assert forwardable_request_headers(headers) == [("accept", "*/*"), ("x-two", "a"), ("x-two", "b")]


def test_request_headers_are_decoded_as_latin1() -> None:
    assert forwardable_request_headers([(b"x-name", "caf\u00e9".encode("latin-1"))]) == [("x-name", "caf\u00e9")]


def test_forwarded_headers_replace_what_the_client_claimed() -> None:
    ex = _exchange([(b"host", b"gw.example:8080"), (b"x-forwarded-for", b"1.2.3.4"),
                    (b"x-forwarded-for", b"5.6.7.8"), (b"x-forwarded-proto", b"http"),
                    (b"x-forwarded-host", b"evil"), (b"x-request-id", b"client-id"), (b"accept", b"text/plain"),
                    (b"connection", b"close")])
    assert ApiGatewayOrchestrator._request_headers(ex) == [
        ("accept", "text/plain"),
        ("X-Forwarded-For", "1.2.3.4, 10.0.0.9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "gw.example:8080"),
        ("X-Request-ID", "rid-1"),
    ]


def test_forwarded_headers_without_host_or_prior_hops() -> None:
    ex = _exchange([(b"accept", b"*/*")], request_id="r2")
    assert ApiGatewayOrchestrator._request_headers(ex) == [
        ("accept", "*/*"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "https"), ("X-Request-ID", "r2")]


def test_every_connection_header_of_a_request_names_hop_by_hop_ones() -> None:
    """Two Connection headers: what either names stays on this hop (the pipeline's path too)."""
    from app.pipeline.exchange import Exchange
    from app.orchestrator import ApiGatewayOrchestrator

    raw = [(b"host", b"h"), (b"connection", b"keep-alive"), (b"connection", b"x-secret"),
           (b"x-secret", b"1"), (b"x-public", b"2")]
    assert forwardable_request_headers(raw) == [("x-public", "2")]
    ex = Exchange(method="GET", path="/", raw_path=b"/", query_string=b"", headers=raw, client_addr="10.0.0.1")
    sent = dict(ApiGatewayOrchestrator._request_headers(ex))
    assert "x-secret" not in sent and sent["x-public"] == "2"
