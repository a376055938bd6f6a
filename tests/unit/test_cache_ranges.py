"""Parsing a client's Range and If-Range against a kept answer (app/cache/ranges.py), hostile forms
included: what is served (a slice, a 416) or ignored (the whole answer)."""

from __future__ import annotations

import pytest

from app.cache.ranges import Unsatisfiable, byte_range, if_range_holds, partial, ranged_reply

LENGTH = 1000


@pytest.mark.parametrize(("field", "expected"), [
    (b"bytes=0-0", (0, 0)),
    (b"bytes=10-19", (10, 19)),
    (b"bytes=990-", (990, 999)),
    (b"bytes=0-", (0, 999)),
    (b"bytes=-1", (999, 999)),
    (b"bytes=-10", (990, 999)),
    (b"bytes=-5000", (0, 999)),  # a suffix longer than the body is the whole body
    (b"bytes=990-5000", (990, 999)),  # past the end: cut at the end
    (b"BYTES=1-2", (1, 2)),  # the unit is case-insensitive
    (b" bytes=1-2 ", (1, 2)),
    (b"bytes=0-" + b"9" * 5000, (0, 999)),  # a last position too long for int(): the end
    (b"bytes=00000000000000000000000001-2", (1, 2)),  # leading zeros are digits like any other
])
def test_one_range_is_served(field: bytes, expected: tuple[int, int]) -> None:
    assert byte_range(field, LENGTH) == expected


@pytest.mark.parametrize("field", [
    b"bytes=0-1,5-6",  # several ranges: no multipart answers
    b"bytes=0-1, 5-6",
    b"items=0-1",  # another unit
    b"bytes=5-1",  # last before first: invalid
    b"bytes=-",
    b"bytes=",
    b"bytes",
    b"bytes=a-b",
    b"bytes=1-2-3",
    b"bytes=+1-2",
    b"bytes=1.5-2",
    b"bytes=\xff-1",
    b"bytes=0x10-20",
    b"bytes=\xd9\xa1-2",  # an Arabic-Indic digit: not a DIGIT
    b"",
])
def test_anything_else_is_ignored(field: bytes) -> None:
    assert byte_range(field, LENGTH) is None


@pytest.mark.parametrize("field", [b"bytes=1000-", b"bytes=1000-2000", b"bytes=-0",
                                   b"bytes=" + b"9" * 5000 + b"-"])
def test_a_range_past_the_end_is_unsatisfiable(field: bytes) -> None:
    with pytest.raises(Unsatisfiable):
        byte_range(field, LENGTH)


def test_an_empty_body_ignores_every_range() -> None:
    assert byte_range(b"bytes=0-0", 0) is None
    assert byte_range(b"bytes=-1", 0) is None


HEADERS = [(b"etag", b'"v1"'), (b"last-modified", b"Tue, 01 Dec 2026 10:00:00 GMT"),
           (b"date", b"Tue, 01 Dec 2026 10:00:05 GMT"), (b"content-length", b"1000"),
           (b"content-type", b"application/octet-stream")]


@pytest.mark.parametrize(("condition", "holds"), [
    (b'"v1"', True),
    (b' "v1" ', True),
    (b'"v2"', False),
    (b'W/"v1"', False),  # a weak tag never matches strongly
    (b"Tue, 01 Dec 2026 10:00:00 GMT", True),
    (b"Tuesday, 01-Dec-26 10:00:00 GMT", True),  # the same date in another form
    (b"Tue, 01 Dec 2026 10:00:01 GMT", False),
    (b"not a date", False),
    (b"", False),
])
def test_if_range(condition: bytes, holds: bool) -> None:
    assert if_range_holds(condition, HEADERS) is holds


def test_if_range_by_date_needs_a_strong_last_modified() -> None:
    """A Last-Modified less than a second before the answer's Date is weak (RFC 9110 8.8.2.2)."""
    weak = [(b"last-modified", b"Tue, 01 Dec 2026 10:00:00 GMT"), (b"date", b"Tue, 01 Dec 2026 10:00:00 GMT")]
    assert not if_range_holds(b"Tue, 01 Dec 2026 10:00:00 GMT", weak)
    assert not if_range_holds(b"Tue, 01 Dec 2026 10:00:00 GMT", weak[:1])  # no Date: not known strong


def test_partial_frames_the_slice() -> None:
    body = bytes(range(256)) * 4
    fields, part = partial(HEADERS + [(b"content-range", b"bytes 0-1/2")], body, 10, 19)
    assert part == body[10:20]
    assert (b"content-range", b"bytes 10-19/1024") in fields
    assert (b"content-length", b"10") in fields
    assert [name for name, _ in fields].count(b"content-length") == 1
    assert [name for name, _ in fields].count(b"content-range") == 1
    assert (b"etag", b'"v1"') in fields


def test_ranged_reply() -> None:
    body = b"0123456789"
    served = ranged_reply(b"bytes=2-4", None, HEADERS, body)
    assert served is not None and (served.status, served.body) == (206, b"234")
    assert ranged_reply(b"bytes=2-4", b'"v2"', HEADERS, body) is None  # If-Range failed: the whole
    refused = ranged_reply(b"bytes=10-", None, HEADERS, body)
    assert refused is not None and refused.status == 416
    assert (b"content-range", b"bytes */10") in refused.headers
    assert refused.body.startswith(b'{"error":"range not satisfiable"')
    assert ranged_reply(b"bytes=10-", None, HEADERS, body, refuse=False) is None
