"""Strict freshness (RFC 9111 sections 4.2 and 5): what cannot be read makes a response stale, in
the parsers (app/cache/freshness.py) and in what the default strategy keeps."""

from __future__ import annotations

import calendar
import time

import pytest

from app.cache.freshness import (DeltaDirectives, age_seconds, delta_directives, expires_lifetime, heuristic_lifetime,
                                  http_date)
from app.cache.policy import CacheRequest, DefaultCacheStrategy
from app.config import CacheSection, RouteCacheSpec

STRATEGY = DefaultCacheStrategy(CacheSection(ttl=300, stale_grace=60, stale_while_revalidate=10))
NOW = float(int(time.time()))  # whole seconds, as HTTP-dates give them
SUNDAY = float(calendar.timegm((1994, 11, 6, 8, 49, 37)))


def _store(*fields: tuple[str, str]):
    raw = [(name.lower().encode(), value.encode()) for name, value in fields]
    request = CacheRequest(method="GET", route="r", path="/a", settings=RouteCacheSpec())
    return STRATEGY.storable(request, 200, raw)


def _imf(at: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(at))


@pytest.mark.parametrize("value, expected", [
    (b"max-age=60", DeltaDirectives(max_age=60)),
    (b"MAX-AGE=60", DeltaDirectives(max_age=60)),
    (b"max-age=060", DeltaDirectives(max_age=60)),
    (b"max-age=60, s-maxage=30", DeltaDirectives(max_age=60, s_maxage=30)),
    (b"max-age=60, max-age=1", DeltaDirectives(max_age=60)),  # the first counts
    (b'no-cache="a, max-age=1", max-age=5', DeltaDirectives(max_age=5)),  # a comma in quotes
    (b'max-age=60, foo="max-age=1"', DeltaDirectives(max_age=60)),
    (b"max-age=99999999999", DeltaDirectives(max_age=2**31)),
    (b"public, no-transform", DeltaDirectives()),
])
def test_lifetime_directives_that_can_be_read(value: bytes, expected: DeltaDirectives) -> None:
    assert delta_directives(value) == expected


@pytest.mark.parametrize("value", [
    b"max-age=-3600", b'max-age="3600"', b"max-age='3600'", b"max-age=3600.0", b"max-age=100a",
    b"max-age=a100", b"max-age = 3600", b"max-age =3600", b"max-age= 3600", b"max-age=", b"max-age",
    b"s-maxage=-1", b'public, s-maxage="60"',
])
def test_a_lifetime_directive_that_cannot_be_read_is_invalid(value: bytes) -> None:
    assert delta_directives(value).invalid


@pytest.mark.parametrize("value, seconds", [(b"0", 0), (b"12", 12), (b"007", 7), (b"99999999999", 2**31)])
def test_ages_that_can_be_read(value: bytes, seconds: int) -> None:
    assert age_seconds(value) == seconds


@pytest.mark.parametrize("value", [b"abc", b"-7200", b"7200.0", b"7200, 0", b"0, 7200", b"0, 0", b"7200;foo=bar",
                                   b"", b" 12"])
def test_an_age_that_is_not_one_non_negative_integer_cannot_be_read(value: bytes) -> None:
    assert age_seconds(value) is None


@pytest.mark.parametrize("value", [b"Sun, 06 Nov 1994 08:49:37 GMT",   # IMF-fixdate
                                   b"Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
                                   b"Sun Nov  6 08:49:37 1994"])       # asctime
def test_the_three_http_date_forms(value: bytes) -> None:
    assert http_date(value, NOW) == SUNDAY


def test_a_two_digit_year_more_than_50_years_ahead_is_in_the_past() -> None:
    in_2026 = float(calendar.timegm((2026, 12, 7, 0, 0, 0)))
    assert time.gmtime(http_date(b"Thursday, 18-Aug-50 02:01:18 GMT", in_2026)).tm_year == 2050
    assert time.gmtime(http_date(b"Saturday, 18-Aug-90 02:01:18 GMT", in_2026)).tm_year == 1990


@pytest.mark.parametrize("value", [
    b"0", b"-1", b"", b"THU, 18 Aug 2050 02:01:18 GMT", b"Thu, 18 AUG 2050 02:01:18 GMT",
    b"Thu, 18 Aug 2050 02:01:18 gMT", b"Thu, 18 Aug 2050 02:01:18 UTC", b"Thu, 18 Aug 2050 02:01:18 AEST",
    b"Thu, 18 Aug 50 02:01:18 GMT", b"Thu 18 Aug 2050 02:01:18 GMT", b"Thu, 18  Aug  2050 02:01:18 GMT",
    b"Thu, 18-Aug-2050 02:01:18 GMT", b"Thu, 18 Aug 2050 02.01.18 GMT", b"Thu, 18 Aug 2050 2:01:18 GMT",
    b"Thu, 31 Feb 2050 02:01:18 GMT", b"Thu, 18 Aug 2050 24:01:18 GMT",
    b"Thu, 18 Aug 2050 02:01:18 GMT, Thu, 18 Aug 2050 02:01:19 GMT",  # two lines, joined
])
def test_what_is_no_http_date(value: bytes) -> None:
    assert http_date(value, NOW) is None


def test_expires_lifetime_counts_from_date_else_from_now() -> None:
    assert expires_lifetime(_imf(SUNDAY + 100).encode(), _imf(SUNDAY).encode(), NOW) == 100
    assert expires_lifetime(_imf(NOW + 100).encode(), b"not a date", NOW) == 100
    assert expires_lifetime(_imf(NOW + 100).encode(), None, NOW) == 100
    assert expires_lifetime(b"0", None, NOW) == 0  # invalid: already expired


# -- what the default strategy keeps -----------------------------------------------------------

@pytest.mark.parametrize("expires", ["0", "Thu, 18 Aug 2050 02:01:18 UTC", "THU, 18 Aug 2050 02:01:18 GMT",
                                     "Thu, 18 Aug 50 02:01:18 GMT", "Thu, 18-Aug-2050 02:01:18 GMT",
                                     "Thu, 18 Aug 2050 2:01:18 GMT", "Thu 18 Aug 2050 02:01:18 GMT"])
def test_an_invalid_expires_is_already_expired(expires: str) -> None:
    assert _store(("Expires", expires)) is None


def test_a_valid_expires_gives_the_lifetime() -> None:
    decision = _store(("Date", _imf(NOW)), ("Expires", _imf(NOW + 100)))
    assert decision is not None and decision.ttl_ms == 100_000
    decision = _store(("Expires", _imf(time.time() + 100)))  # from the time it arrived
    assert decision is not None and 98_000 <= decision.ttl_ms <= 100_000
    assert _store(("Expires", _imf(NOW + 100)), ("Expires", _imf(NOW + 200))) is None  # two lines


def test_max_age_wins_over_an_invalid_expires() -> None:
    decision = _store(("Cache-Control", "max-age=60"), ("Expires", "0"))
    assert decision is not None and decision.ttl_ms == 60_000


@pytest.mark.parametrize("age", [("Age", "abc"), ("Age", "-7200"), ("Age", "7200.0"), ("Age", "7200, 0"),
                                 ("Age", "0, 0"), ("Age", "7200;foo=bar")])
def test_an_unreadable_age_is_stale(age: tuple[str, str]) -> None:
    assert _store(("Cache-Control", "max-age=3600"), age) is None
    assert _store(age) is None  # also without freshness of its own


def test_two_age_lines_cannot_be_read() -> None:
    assert _store(("Cache-Control", "max-age=3600"), ("Age", "0"), ("Age", "0")) is None


@pytest.mark.parametrize("control", ["max-age=-3600", 'max-age="3600"', "max-age=3600.5", "s-maxage=-1",
                                     "public, max-age=3600, s-maxage=\"60\""])
def test_a_negative_or_quoted_lifetime_is_stale(control: str) -> None:
    assert _store(("Cache-Control", control)) is None


@pytest.mark.parametrize("control", ["max-age=60, must-revalidate", "max-age=60, proxy-revalidate",
                                     "s-maxage=60", "max-age=10, s-maxage=60, stale-if-error=600",
                                     "max-age=60, must-revalidate, stale-while-revalidate=30"])
def test_directives_that_forbid_serving_stale_leave_no_grace(control: str) -> None:
    decision = _store(("Cache-Control", control))
    assert decision is not None
    assert (decision.grace_ms, decision.swr_ms) == (0, 0)


def test_without_them_stale_grace_and_revalidation_windows_remain() -> None:
    decision = _store(("Cache-Control", "max-age=60"))
    assert decision is not None and (decision.grace_ms, decision.swr_ms) == (60_000, 10_000)


# -- heuristic freshness (rfc9111 mode) --------------------------------------------------------

RFC9111 = DefaultCacheStrategy(CacheSection(ttl=300, mode="rfc9111"))


def _store_rfc9111(status: int, *fields: tuple[str, str], strategy: DefaultCacheStrategy = RFC9111):
    raw = [(name.lower().encode(), value.encode()) for name, value in fields]
    request = CacheRequest(method="GET", route="r", path="/a", settings=RouteCacheSpec())
    return strategy.storable(request, status, raw)


@pytest.mark.parametrize("last_modified, date, lifetime", [
    (NOW - 1000, NOW, 100),            # a tenth of the time since Last-Modified
    (NOW - 1000, NOW - 500, 50),       # ... until the Date it was sent with
    (NOW - 9, NOW, 0),                 # less than a second
    (NOW + 60, NOW, 0),                # modified after it was sent: no freshness
])
def test_heuristic_lifetime(last_modified: float, date: float, lifetime: int) -> None:
    assert heuristic_lifetime(_imf(last_modified).encode(), _imf(date).encode(), NOW) == lifetime


def test_heuristic_lifetime_needs_a_valid_last_modified() -> None:
    assert heuristic_lifetime(None, _imf(NOW).encode(), NOW) is None
    assert heuristic_lifetime(b"yesterday", _imf(NOW).encode(), NOW) is None
    assert heuristic_lifetime(_imf(NOW - 1000).encode(), b"not a date", NOW) == 100  # the time it arrived


def test_rfc9111_heuristic_freshness_is_capped_by_the_ttl() -> None:
    day_old = ("Last-Modified", _imf(NOW - 86_400))
    decision = _store_rfc9111(200, ("Date", _imf(NOW)), day_old)
    assert decision is not None and decision.ttl_ms == 300_000  # a tenth of a day is 8640 s
    long_ttl = DefaultCacheStrategy(CacheSection(ttl=100_000, mode="rfc9111"))
    decision = _store_rfc9111(200, ("Date", _imf(NOW)), day_old, strategy=long_ttl)
    assert decision is not None and decision.ttl_ms == 8_640_000


def test_rfc9111_without_freshness_or_heuristic_keeps_only_what_it_can_revalidate() -> None:
    assert _store_rfc9111(200) is None
    assert _store_rfc9111(200, ("Cache-Control", "public")) is None  # no Last-Modified: no heuristic
    decision = _store_rfc9111(200, ("ETag", '"a"'))
    assert decision is not None and decision.ttl_ms == 0 and decision.revalidate_ms == 300_000
    assert _store_rfc9111(302, ("ETag", '"a"')) is None  # not heuristically cacheable: not storable


def test_a_no_cache_answer_is_kept_stale_without_grace() -> None:
    decision = _store(("Cache-Control", "no-cache, max-age=60"), ("ETag", '"a"'))
    assert decision is not None
    assert (decision.ttl_ms, decision.grace_ms, decision.swr_ms, decision.revalidate_ms) == (0, 0, 0, 300_000)
    assert _store(("Cache-Control", "no-cache, max-age=60")) is None  # nothing to revalidate with
