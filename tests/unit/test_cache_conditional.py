"""Validators and conditions (app/cache/conditional.py) on their own: the 304 header update of
RFC 9111 section 4.3.4, the client's conditions, the fields a revalidation sends."""

from __future__ import annotations

from app.cache.conditional import freshened_headers, not_modified, not_modified_headers, revalidation_fields

STORED = [(b"content-type", b"text/plain"), (b"content-length", b"5"), (b"etag", b'"a"'),
          (b"cache-control", b"max-age=1"), (b"x-old", b"1"), (b"last-modified", b"Wed, 01 Jan 2020 00:00:00 GMT")]


def test_a_304_updates_every_field_but_framing_and_the_validator() -> None:
    fresh = [(b"cache-control", b"max-age=60"), (b"content-length", b"0"), (b"etag", b'"b"'), (b"x-new", b"2"),
             (b"age", b"3"), (b"set-cookie", b"a=b")]
    updated = dict(freshened_headers(STORED, fresh))
    assert updated[b"cache-control"] == b"max-age=60" and updated[b"x-new"] == b"2"
    assert updated[b"content-length"] == b"5" and updated[b"etag"] == b'"a"'
    assert b"age" not in updated and b"set-cookie" not in updated and updated[b"x-old"] == b"1"
    assert freshened_headers(STORED, []) == STORED


def test_revalidation_sends_the_validators_that_are_valid() -> None:
    assert revalidation_fields(STORED) == [(b"if-none-match", b'"a"'),
                                          (b"if-modified-since", b"Wed, 01 Jan 2020 00:00:00 GMT")]
    assert revalidation_fields([(b"etag", b"no-quotes"), (b"last-modified", b"yesterday")]) == []
    assert revalidation_fields([(b"etag", b'"a\r\nX: y"')]) == []


def test_conditions() -> None:
    assert not_modified(b'W/"a"', None, STORED)
    assert not not_modified(b'"b", W/"c"', b"Wed, 01 Jan 2030 00:00:00 GMT", STORED)
    assert not_modified(None, b"Wed, 01 Jan 2020 00:00:00 GMT", STORED)
    assert not not_modified(None, b"Tue, 31 Dec 2019 23:59:59 GMT", STORED)
    assert not not_modified(None, None, STORED)
    assert not not_modified(b'"a"', None, [(b"content-type", b"text/plain")])


def test_a_304_carries_the_listed_fields_only() -> None:
    assert dict(not_modified_headers(STORED)) == {b"etag": b'"a"', b"cache-control": b"max-age=1"}
