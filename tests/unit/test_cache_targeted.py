"""RFC 9213 targeted fields: the Structured Fields Dictionary they are, and the policy they give."""

from __future__ import annotations

import pytest

from app.cache.targeted import Token, parse_dictionary, targeted_policy


@pytest.mark.parametrize(("text", "members"), [
    ("max-age=60", {"max-age": 60}),
    ("  max-age=60 ,\tno-store ", {"max-age": 60, "no-store": True}),
    ('private="set-cookie, x-a", s-maxage=0', {"private": "set-cookie, x-a", "s-maxage": 0}),
    ("a=?0, b=?1, c=tok/en:x, d=1.5, e=:aGk=:, f=(1 \"x\");p=1", {"a": False, "b": True, "c": "tok/en:x", "d": 1.5,
                                                                  "e": b"hi", "f": [1, "x"]}),
    ("max-age=1, max-age=2", {"max-age": 2}),  # the last of a repeated key
    ("max-age=60;x=1;y", {"max-age": 60}),
    ("", {}),
])
def test_a_dictionary(text: str, members: dict) -> None:
    assert parse_dictionary(text) == members


@pytest.mark.parametrize("text", [
    "max-age=60,", "Max-Age=60", "max-age==60", "max-age=60 no-store", "max-age=", "max-age=1234567890123456",
    "a=\"unterminated", "a=\"bad\\escape\"", "a=?2", "a=1.2345", "a=(1 2", ",a", "a=:not base64!:", "é=1",
    "max-age=60;", "a=-", "a=1.",
])
def test_not_a_dictionary(text: str) -> None:
    with pytest.raises(ValueError):
        parse_dictionary(text)


def test_tokens_and_strings_differ() -> None:
    members = parse_dictionary('a=x, b="x"')
    assert isinstance(members["a"], Token) and not isinstance(members["b"], Token)


def test_the_policy() -> None:
    policy = targeted_policy(b'max-age=60, s-maxage=30, no-cache="x-a", stale-if-error=5, must-revalidate')
    assert policy is not None
    assert (policy.deltas.max_age, policy.deltas.s_maxage, policy.deltas.invalid) == (60, 30, False)
    assert policy.control.no_cache == ["x-a"] and policy.control.must_revalidate
    assert policy.control.stale_if_error == 5
    # A directive of the wrong type is ignored; a lifetime of the wrong type makes the answer stale.
    ignored = targeted_policy(b"no-store=1, private=tok, stale-if-error=\"5\", public")
    assert ignored is not None and not ignored.control.no_store and ignored.control.private is False
    assert ignored.control.stale_if_error is None and ignored.control.public
    for value in (b'max-age="60"', b"max-age=-1", b"s-maxage=1.5", b"max-age"):
        unread = targeted_policy(value)
        assert unread is not None and unread.deltas.invalid, value
    # Empty or invalid: as if absent.
    for value in (b"", b"  ", b"max-age=60,", b"\xff=1"):
        assert targeted_policy(value) is None


def test_hostile_sizes_parse_in_one_pass() -> None:
    assert parse_dictionary(",".join(f"k{i}=1" for i in range(5000)))["k4999"] == 1
    with pytest.raises(ValueError):
        parse_dictionary("a=\"" + "x" * 100_000)
