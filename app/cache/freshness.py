"""What a response says about its own freshness, read as strictly as RFC 9111 asks of a cache.

Freshness information that cannot be read is never taken for a long life: an invalid ``Expires``
means already expired (RFC 9111 section 5.3), a ``max-age`` or ``s-maxage`` whose argument is not
delta-seconds (negative, quoted, a fraction, spaces around "=") makes the response stale (section
4.2.1 encourages it), and so does an ``Age`` that is not one non-negative integer: section 5.1
lets a cache ignore such a field, but an age it cannot read may hide any age. Of two ``max-age``
directives the first counts (section 4.2.1).
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from datetime import datetime

# Section 1.2.2: a delta-seconds too large to hold is taken as 2^31.
_LARGEST = 2**31

# The comma-separated items of a Cache-Control value; a comma inside a quoted string separates
# nothing (``no-cache="a, b"`` is one item).
_ITEM = re.compile(rb'(?:[^,"]|"(?:[^"\\]|\\.)*")+')
_DELTA_SECONDS = re.compile(rb"[0-9]+")
_LIFETIME_NAMES = (b"max-age", b"s-maxage")


@dataclass(frozen=True, slots=True)
class DeltaDirectives:
    """A Cache-Control value's ``max-age`` and ``s-maxage`` in seconds (None: absent)."""

    max_age: int | None = None
    s_maxage: int | None = None
    # One of them is present with an argument that is not delta-seconds: the response is stale.
    invalid: bool = False


NO_DELTAS = DeltaDirectives()
_PARSED: dict[bytes, DeltaDirectives] = {}
_PARSED_KEPT = 512


def delta_directives(control: bytes) -> DeltaDirectives:
    """The lifetime directives of a Cache-Control value, kept per value (backends repeat theirs)."""
    parsed = _PARSED.get(control)
    if parsed is None:
        if len(_PARSED) >= _PARSED_KEPT:
            _PARSED.clear()
        parsed = _PARSED[control] = _parse_deltas(control)
    return parsed


def _parse_deltas(control: bytes) -> DeltaDirectives:
    found: dict[bytes, int] = {}
    invalid = False
    for item in _ITEM.findall(control):
        name, equals, argument = item.strip().partition(b"=")
        key = name.rstrip().lower()
        if key not in _LIFETIME_NAMES or key in found:
            continue
        if not equals or name != name.rstrip() or not _DELTA_SECONDS.fullmatch(argument):
            invalid = True
            found[key] = 0
            continue
        found[key] = min(int(argument), _LARGEST)
    if not found:
        return NO_DELTAS
    return DeltaDirectives(found.get(b"max-age"), found.get(b"s-maxage"), invalid)


def age_seconds(value: bytes) -> int | None:
    """An ``Age`` value (its field lines joined) in seconds; None when it is not one non-negative
    integer, which makes the response stale."""
    return min(int(value), _LARGEST) if value.isdigit() else None


_MONTHS = {name: number for number, name in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"), 1)}
_MONTH = rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = rb"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# RFC 9110 section 5.6.7: the preferred form, and the two obsolete ones a recipient must accept.
# All three are case-sensitive and allow no other spacing, zone or field order.
_IMF_FIXDATE = re.compile(rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) " + _MONTH + rb" ([0-9]{4}) " + _TIME + rb" GMT")
_RFC850_DATE = re.compile(rb"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), ([0-9]{2})-" + _MONTH
                          + rb"-([0-9]{2}) " + _TIME + rb" GMT")
_ASCTIME_DATE = re.compile(rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) " + _MONTH + rb" ([0-9 ][0-9]) " + _TIME
                           + rb" ([0-9]{4})")


def http_date(value: bytes, now: float) -> float | None:
    """An HTTP-date as a Unix time; None when ``value`` is not one. ``now`` places the two-digit
    years of the RFC 850 form."""
    if match := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
    elif match := _ASCTIME_DATE.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
    elif match := _RFC850_DATE.fullmatch(value):
        day, month, short_year, hour, minute, second = match.groups()
        # A two-digit year more than 50 years ahead is the latest past year with those digits.
        this_year = time.gmtime(now).tm_year
        candidate = this_year - this_year % 100 + int(short_year)
        year = b"%d" % (candidate - 100 if candidate > this_year + 50 else candidate)
    else:
        return None
    fields = (int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second))
    try:
        datetime(*fields)  # rejects 31 Feb, hour 24, second 60
    except ValueError:
        return None
    return float(calendar.timegm(fields))


def expires_lifetime(expires: bytes, date: bytes | None, now: float) -> int:
    """The freshness lifetime that ``Expires`` gives (seconds, 0 or less when already expired):
    its time minus the ``Date`` the response was sent with, or minus ``now`` when that is missing
    or invalid (RFC 9111 section 4.2.1). Two ``Expires`` lines joined are no HTTP-date either."""
    expiry = http_date(expires, now)
    if expiry is None:
        return 0
    sent = http_date(date, now) if date is not None else None
    return min(int(expiry - (sent if sent is not None else now)), _LARGEST)


# Section 4.2.2: the share of the time since Last-Modified that a heuristic may call fresh (the
# value the section mentions, and that common caches use).
_HEURISTIC_SHARE = 0.1


def heuristic_lifetime(last_modified: bytes | None, date: bytes | None, now: float) -> int | None:
    """A heuristic freshness lifetime (RFC 9111 section 4.2.2): a tenth of the time between
    ``Last-Modified`` and the ``Date`` the response was sent with (``now`` when it has none); None
    without a valid ``Last-Modified``, which leaves no basis for one. A ``Last-Modified`` after
    that date gives 0."""
    if last_modified is None:
        return None
    modified = http_date(last_modified, now)
    if modified is None:
        return None
    sent = http_date(date, now) if date is not None else None
    return min(max(0, int(((sent if sent is not None else now) - modified) * _HEURISTIC_SHARE)), _LARGEST)
