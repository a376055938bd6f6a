"""Path tricks: the router matches, and the backend receives, the normalised path; what cannot be
normalised safely is refused with 400 before routing."""

from __future__ import annotations

import io

import orjson
import pytest

from tests.attacks.conftest import edge_gateway
from tests.attacks.raw import RawBackend, ask
from tests.support import GatewayThread, wait_for


def get(target: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\n\r\n"


@pytest.mark.parametrize("target", [
    b"/public/../secret/x", b"/public/%2e%2e/secret/x", b"/public/%2E%2E/secret/x", b"/public/./../secret/x",
    b"/public/.%2e/secret/x", b"/public/a/../../secret/x",
])
def test_dot_segments_leave_the_route_and_reach_nothing(gateway: GatewayThread, raw_backend: RawBackend,
                                                        target: bytes) -> None:
    # Normalised to /secret/x, which no route serves: the prefix /public/ is a boundary again.
    answer = ask(gateway.port, get(target))
    assert answer.status == 404
    assert answer.json() == {"error": "no route", "method": "GET", "path": "/secret/x"}
    assert raw_backend.raw == b""


@pytest.mark.parametrize(("target", "reason"), [
    (b"/public/..%2Fsecret/x", "encoded slash or backslash in path (%2F, %5C)"),
    (b"/public%2F..%2Fsecret/x", "encoded slash or backslash in path (%2F, %5C)"),
    (b"/public/..%5csecret/x", "encoded slash or backslash in path (%2F, %5C)"),
    (b"/public/..\\secret/x", "backslash in path"),
    (b"/public/a%00b", "encoded control character in path"),
    (b"/public/a%0d%0aX-Injected:%201", "encoded control character in path"),
    (b"/public/a%7f", "encoded control character in path"),
    (b"/public/a%zz", "malformed percent-encoding in path"),
    (b"/public/a%4", "malformed percent-encoding in path"),
    (b"/..", "path climbs above /"),
    (b"/public/../../x", "path climbs above /"),
    (b"/%2e%2e/public/x", "path climbs above /"),
])
def test_unsafe_paths_are_400_before_routing(gateway: GatewayThread, raw_backend: RawBackend, target: bytes,
                                             reason: str) -> None:
    answer = ask(gateway.port, get(target))
    assert answer.status == 400
    assert answer.headers[b"content-type"] == b"application/json"
    assert answer.headers[b"connection"] == b"close"
    assert answer.json() == {"error": "invalid path", "reason": reason}
    assert raw_backend.raw == b""


@pytest.mark.parametrize(("target", "forwarded"), [
    (b"/public/a/../b", b"/public/b"),
    (b"/public/./a/./b/.", b"/public/a/b/"),
    (b"/public//a///b", b"/public/a/b"),
    (b"//public/a", b"/public/a"),
    (b"/public/%7Euser/%41%2d%5F", b"/public/~user/A-_"),
    (b"/public/caf%c3%a9", b"/public/caf%C3%A9"),
    (b"/public/a%20b%3Fc", b"/public/a%20b%3Fc"),
    (b"/public/%252e%252e/x", b"/public/%252e%252e/x"),  # decoded once only: %25 stays encoded
    (b"/publi%63/x?q=%2F..%2F&r=/../", b"/public/x?q=%2F..%2F&r=/../"),  # the query is not a path
    (b"/public/x/", b"/public/x/"),
])
def test_the_backend_receives_the_normalised_path(gateway: GatewayThread, raw_backend: RawBackend,
                                                  target: bytes, forwarded: bytes) -> None:
    assert ask(gateway.port, get(target)).status == 200
    [received] = raw_backend.received
    assert received.request_line == b"GET " + forwarded + b" HTTP/1.1"


@pytest.mark.parametrize(("target", "forwarded"), [
    (b"/strip/abc", b"/abc"),
    (b"//strip/abc", b"/abc"),
    (b"/stri%70/abc", b"/abc"),
    (b"/strip", b"/"),
    (b"/strip/", b"/"),
    (b"/strip//abc//d", b"/abc/d"),
    (b"/strip/a/../b", b"/b"),
])
def test_strip_prefix_removes_whole_segments_of_the_normalised_path(
        gateway: GatewayThread, raw_backend: RawBackend, target: bytes, forwarded: bytes) -> None:
    assert ask(gateway.port, get(target)).status == 200
    [received] = raw_backend.received
    assert received.target == forwarded


def test_a_longer_segment_is_not_the_prefix(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    assert ask(gateway.port, get(b"/stripe/abc")).status == 404
    assert ask(gateway.port, get(b"/public-x/abc")).status == 404
    assert raw_backend.raw == b""


def test_merge_slashes_off_keeps_them(raw_backend: RawBackend) -> None:
    with edge_gateway(raw_backend, paths={"merge_slashes": False}) as gateway:
        assert ask(gateway.port, get(b"/public//a/b//")).status == 200
        assert ask(gateway.port, get(b"/public/a//../b")).status == 200
    assert [r.target for r in raw_backend.received] == [b"/public//a/b//", b"/public/a/b"]


def test_encoded_slash_pass_forwards_it_undecoded_and_never_splits_on_it(raw_backend: RawBackend) -> None:
    with edge_gateway(raw_backend, paths={"encoded_slash": "pass"}) as gateway:
        assert ask(gateway.port, get(b"/public/a%2fb%5Cc/%2e/d")).status == 200
        # One segment "public%2F..%2Fsecret": it is not /public/, and /secret/ is never reached.
        answer = ask(gateway.port, get(b"/public%2F..%2Fsecret/x"))
        assert answer.status == 404
        assert answer.json()["path"] == "/public%2F..%2Fsecret/x"
        assert ask(gateway.port, get(b"/strip/a%2Fb/c")).status == 200
    assert [r.target for r in raw_backend.received] == [b"/public/a%2Fb%5Cc/d", b"/a%2Fb/c"]


def test_the_control_plane_sees_the_normalised_path_too(gateway: GatewayThread, raw_backend: RawBackend) -> None:
    assert ask(gateway.port, get(b"/public/../_gateway/health")).status == 200
    assert ask(gateway.port, get(b"/_gateway/../public/x")).status == 200
    assert [r.target for r in raw_backend.received] == [b"/public/x"]


def test_the_access_log_keeps_the_received_path_beside_the_normalised_one(raw_backend: RawBackend) -> None:
    gateway = edge_gateway(raw_backend, access_log=True)
    stream = io.BytesIO()
    gateway.gateway.access_log.stream = stream  # type: ignore[union-attr]
    with gateway:
        assert ask(gateway.port, get(b"/public/a/%2e%2e//%62?x=1")).status == 200
        assert ask(gateway.port, get(b"/public/plain")).status == 200
        wait_for(lambda: stream.getvalue().count(b"\n") == 2, what="two access log lines")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["path"], line["received_path"]) for line in lines] == [
        ("/public/b", "/public/a/%2e%2e//%62"), ("/public/plain", "/public/plain")]


def test_encoded_slashes_are_the_control_planes_own_business(gateway: GatewayThread,
                                                            raw_backend: RawBackend) -> None:
    # The admin API names routes by key, "/" included; no backend ever sees those paths.
    assert ask(gateway.port, get(b"/_gateway/admin/routes/%2Fa%2F*")).status != 400
    # Leaving the control plane by dot segments, the path meets the rules of every other path.
    answer = ask(gateway.port, get(b"/_gateway/%2e%2e/public/a%2Fb"))
    assert answer.status == 400 and answer.json()["reason"] == "encoded slash or backslash in path (%2F, %5C)"
    assert raw_backend.raw == b""
