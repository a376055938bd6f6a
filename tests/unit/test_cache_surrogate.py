"""Surrogate-Control: the directives the gateway reads (app/cache/surrogate.py)."""

from __future__ import annotations

import pytest

from app.cache.surrogate import surrogate_policy


@pytest.mark.parametrize(("value", "max_age", "no_store", "stale_if_error"), [
    (b"max-age=60", 60, False, None),
    (b"MaX-aGe=60", 60, False, None),                      # names are case-insensitive
    (b"max-age=60+30", 60, False, 30),                     # then 30 s usable when the origin fails
    (b"foobar, max-age=60", 60, False, None),              # an unknown directive is ignored
    (b'content="ESI/1.0, x", max-age=60', 60, False, None),
    (b"max-age=60;other, max-age=5", 5, False, None),      # the first addressed to no device
    (b"no-store", None, True, None),
    (b"max-age=60, no-store", 60, True, None),
    (b"max-age=99999999999", 2**31, False, None),
])
def test_what_it_reads(value: bytes, max_age: int | None, no_store: bool, stale_if_error: int | None) -> None:
    policy = surrogate_policy(value)
    assert policy is not None and not policy.deltas.invalid
    assert (policy.deltas.max_age, policy.control.no_store, policy.control.stale_if_error) == \
        (max_age, no_store, stale_if_error)


@pytest.mark.parametrize("value", [b"max-age =60", b"max-age= 60", b"max-age=-1", b'max-age="60"', b"max-age",
                                   b"max-age=6.0", b"max-age=60+"])
def test_a_lifetime_it_cannot_read_makes_the_answer_stale(value: bytes) -> None:
    policy = surrogate_policy(value)
    assert policy is not None and policy.deltas.invalid


@pytest.mark.parametrize("value", [b"", b"foobar", b'content="ESI/1.0"', b"max-age=60;other-device",
                                   b"no-store;other-device, no-store-remote"])
def test_nothing_for_the_gateway_is_as_if_absent(value: bytes) -> None:
    assert surrogate_policy(value) is None
