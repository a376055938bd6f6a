"""Path normalisation (app/edge/paths.py) as a function: RFC 3986 section 5.2.4's examples, and
properties that hold for any path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.edge.paths import BadPath, PathRules, is_plain, normalise, strip_segments

MERGE = PathRules()
KEEP = PathRules(merge_slashes=False)
PASS = PathRules(pass_encoded_slash=True)


@pytest.mark.parametrize(("raw", "encoded", "decoded"), [
    (b"/a/b/c/./../../g", "/a/g", "/a/g"),  # RFC 3986 section 5.2.4's example
    (b"/mid/content=5/../6", "/mid/6", "/mid/6"),  # and its second
    (b"/a/b/..", "/a/", "/a/"),
    (b"/a/.", "/a/", "/a/"),
    (b"/", "/", "/"),
    (b"//", "/", "/"),
    (b"/%61%2D%7e", "/a-~", "/a-~"),
    (b"/a%20b/%c3%a9", "/a%20b/%C3%A9", "/a b/é"),
    (b"/a%3Fb%23c", "/a%3Fb%23c", "/a?b#c"),
    (b"/.well-known/x", "/.well-known/x", "/.well-known/x"),
    (b"/a/..b/c..", "/a/..b/c..", "/a/..b/c.."),
])
def test_normalise(raw: bytes, encoded: str, decoded: str) -> None:
    normal = normalise(raw, MERGE)
    assert (normal.encoded.decode(), normal.decoded) == (encoded, decoded)


def test_encoded_slashes_pass_as_text() -> None:
    normal = normalise(b"/a%2fb%5c%41/%2e%2e/c%20d", PASS)
    assert normal.encoded == b"/c%20d"
    normal = normalise(b"/a%2fb%5c%41/c%20d%252F", PASS)
    assert normal.encoded == b"/a%2Fb%5CA/c%20d%252F"
    assert normal.decoded == "/a%2Fb%5CA/c d%2F"  # %252F decodes once, to text that is not a separator


@pytest.mark.parametrize("raw", [b"/..", b"/a/../..", b"/a\\b", b"/a%00", b"/a%1f", b"/a%2F", b"/a%5c",
                                 b"/a%", b"/a%g0", b"/a\x01", "/é".encode()])
def test_refused(raw: bytes) -> None:
    with pytest.raises(BadPath):
        normalise(raw, MERGE)


def test_strip_segments() -> None:
    assert strip_segments("/a/b/c", 1) == "/b/c"
    assert strip_segments("/a/{id}/c", 2) == "/c"
    assert strip_segments("//a//b", 1) == "//b"
    assert strip_segments("/a", 1) == "/"
    assert strip_segments("/a/", 1) == "/"


segment = st.sampled_from(["a", "b", ".", "..", "", "%2e", "%2E%2e", "%41", "%2f", "c%20d", "~"])
paths = st.lists(segment, max_size=8).map(lambda s: ("/" + "/".join(s)).encode())


@given(paths, st.sampled_from([MERGE, KEEP, PASS]))
def test_normal_paths_are_fixed_points_and_hold_no_dot_segments(raw: bytes, rules: PathRules) -> None:
    try:
        normal = normalise(raw, rules)
    except BadPath:
        return
    again = normalise(normal.encoded, rules)
    assert again == normal
    segments = normal.encoded.split(b"/")
    assert b"." not in segments and b".." not in segments
    if rules.merge_slashes:
        assert b"//" not in normal.encoded
        if is_plain(normal.encoded):  # the fast path skips exactly the paths normalising leaves alone
            assert normal.decoded == normal.encoded.decode()


@given(st.text(alphabet="ab/.-_~:@!$&'()*+,;=", max_size=20).map(lambda s: ("/" + s).encode()))
def test_what_the_fast_path_skips_normalising_would_leave_alone(raw: bytes) -> None:
    if is_plain(raw):
        assert normalise(raw, MERGE).encoded == raw
