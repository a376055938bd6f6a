"""Range requests answered from the cache (RFC 9110 section 14).

A stored complete answer (a 200) serves a client's single byte range as a 206 with the range's
bytes, or a 416 when no byte of it exists. Everything else about a ``Range`` field is ignored,
which section 14.2 allows: the client gets the whole answer, as it would from a server that does
not do ranges. Ignored are: several ranges (no multipart/byteranges answers), another unit than
bytes, a syntax error, an ``If-Range`` that does not match (13.1.5), an empty body.

A range request also never fills the cache: its answer (a 206) would be one client's slice, so it
takes no fill lock and leaves no mark that the key's answers cannot be kept; a hostile client
cannot make the fleet's other requests for a key wait on, or skip, a fill that stores nothing. The
one exception is ``bytes=0-``, which media players send first and which asks for every byte: it is
sent to the backend without its ``Range`` (and ``If-Range``), so that the whole answer fills the
cache, and is answered as any range request on a kept answer.
"""

from __future__ import annotations

import re
import time

from app.cache.conditional import field_value
from app.cache.freshness import http_date
from app.pipeline.exchange import RawHeaders, Reply, error_reply

# One range of the bytes unit: "first-[last]" or "-suffix" (digits only; OWS around it, as a list
# member may have). Several ranges, other units and anything else: the field is ignored.
_ONE_RANGE = re.compile(rb"[ \t]*bytes[ \t]*=[ \t]*(\d*)-(\d*)[ \t]*", re.IGNORECASE)
# More digits than this name a position past any body the cache keeps (and int() has a limit).
_MAX_DIGITS = 18
# What the backend is not sent when a bytes=0- request fills the cache: it would answer a 206.
FILL_DROPPED = frozenset({b"range", b"if-range"})
WHOLE = b"bytes=0-"
# A GET with one of these is answered for this client only (a slice, a failed precondition): it
# never takes the fill lock, unless its range is WHOLE (CacheStage._may_fill).
SHAPING = frozenset({b"range", b"if-match", b"if-unmodified-since"})


class Unsatisfiable(Exception):
    """The range starts past the body's end: 416, with the body's length."""


def _position(digits: bytes) -> int:
    digits = digits.lstrip(b"0") or b"0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10 ** _MAX_DIGITS


def byte_range(field: bytes, length: int) -> tuple[int, int] | None:
    """The first and last byte (inclusive) that ``field`` asks of a body of ``length`` bytes; None
    when the field is to be ignored (the whole body is the answer). Raises ``Unsatisfiable``."""
    found = _ONE_RANGE.fullmatch(field)
    if found is None or length == 0:
        return None
    first_raw, last_raw = found.groups()
    if not first_raw:
        if not last_raw:
            return None  # "bytes=-": no range at all
        suffix = _position(last_raw)
        if suffix == 0:
            raise Unsatisfiable
        return max(0, length - suffix), length - 1
    first = _position(first_raw)
    if not last_raw:
        last = length - 1
    else:
        last = _position(last_raw)
        if last < first:
            return None  # invalid: ignored (section 14.1.1)
    if first >= length:
        raise Unsatisfiable
    return first, min(last, length - 1)


def if_range_holds(condition: bytes, headers: RawHeaders) -> bool:
    """Whether the stored answer is the representation ``If-Range`` names (section 13.1.5): a strong
    entity tag equal to its ETag, or a date equal to its Last-Modified, which must be strong (at
    least a second before its Date)."""
    condition = condition.strip()
    if condition.startswith(b'"'):
        etag = field_value(headers, b"etag")
        return etag is not None and etag.strip() == condition  # W/ tags never match strongly
    if condition.startswith(b"W/"):
        return False
    modified_raw = field_value(headers, b"last-modified")
    date_raw = field_value(headers, b"date")
    if modified_raw is None or date_raw is None:
        return False
    now = time.time()
    asked, modified, dated = http_date(condition, now), http_date(modified_raw.strip(), now), \
        http_date(date_raw.strip(), now)
    return asked is not None and modified is not None and dated is not None and asked == modified \
        and dated - modified >= 1


def partial(headers: RawHeaders, body: bytes, first: int, last: int) -> tuple[RawHeaders, bytes]:
    """The 206's fields and body: the stored fields, framed for the range."""
    fields = [pair for pair in headers if pair[0] != b"content-length" and pair[0] != b"content-range"]
    fields.append((b"content-range", b"bytes %d-%d/%d" % (first, last, len(body))))
    fields.append((b"content-length", b"%d" % (last - first + 1)))
    return fields, body[first:last + 1]


def ranged_reply(field: bytes, condition: bytes | None, headers: RawHeaders, body: bytes,
                 refuse: bool = True) -> Reply | None:
    """The answer to a range request from a complete answer (``headers``, ``body``): a 206, a 416
    (only when ``refuse``), or None when the range is ignored and the whole answer is sent."""
    if condition is not None and not if_range_holds(condition, headers):
        return None
    try:
        found = byte_range(field, len(body))
    except Unsatisfiable:
        if not refuse:
            return None
        return error_reply(416, "range not satisfiable", [(b"content-range", b"bytes */%d" % len(body))],
                           length=len(body))
    if found is None:
        return None
    fields, part = partial(headers, body, *found)
    return Reply(206, fields, part, from_backend=True)
