"""Validators and conditional requests (RFC 9110 section 13, RFC 9111 section 4.3).

Two uses. A client's ``If-None-Match`` / ``If-Modified-Since`` is answered 304 from a stored
answer that it matches (``not_modified``). And a stale entry with an ``ETag`` or ``Last-Modified``
is revalidated (so is a fresh one, for a client that sent no-cache): a request that goes to the
backend with it at hand asks with those validators (``revalidation_fields``), and a 304 freshens
the stored answer, whose fields are updated from it (``freshened_headers``, section 4.3.4) while
its body is kept.
"""

from __future__ import annotations

import re
import time

from app.cache.freshness import http_date

RawHeaders = list[tuple[bytes, bytes]]

# A client's precondition fields: a request with any of them is the client's own conditional, sent
# to the backend as it is (the cache adds no validators of its own to it).
CLIENT_CONDITIONS = (b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range")
_ENTITY_TAG = re.compile(rb'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"')
# What a 304 carries of the stored answer (RFC 9110 section 15.4.5).
_NOT_MODIFIED_FIELDS = frozenset({b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"})
# Never taken from a 304 into the stored answer (RFC 9111 section 3.2): its body's framing and
# digest, what describes one exchange, not the resource, and the validator that selected the
# stored answer (section 4.3.4: a 304 updates the representation its validator names, it does
# not rename it).
_NOT_UPDATED = frozenset({b"content-length", b"transfer-encoding", b"content-encoding", b"content-range",
                          b"content-md5", b"etag", b"age", b"x-cache", b"x-request-id", b"set-cookie",
                          b"connection", b"keep-alive"})


def field_value(headers: RawHeaders, name: bytes) -> bytes | None:
    """The first value of a (lower-case) field in a stored answer's or a backend's headers: for the
    fields read now and then, where building a dict of them all would cost more."""
    return next((value for field_name, value in headers if field_name == name), None)


def revalidation_fields(headers: RawHeaders) -> RawHeaders:
    """The conditional fields that revalidate a stored answer with these headers; [] without a
    validator (RFC 9111 section 4.3.1)."""
    fields: RawHeaders = []
    etag = field_value(headers, b"etag")
    if etag is not None and _ENTITY_TAG.fullmatch(etag.strip()):
        fields.append((b"if-none-match", etag.strip()))
    modified = field_value(headers, b"last-modified")
    if modified is not None and http_date(modified, time.time()) is not None:
        fields.append((b"if-modified-since", modified))
    return fields


def _opaque(tag: bytes) -> bytes:
    return tag[2:] if tag.startswith(b"W/") else tag


def not_modified(if_none_match: bytes | None, if_modified_since: bytes | None, headers: RawHeaders) -> bool:
    """Whether a stored answer with ``headers`` satisfies the client's conditions so that it gets a
    304 (RFC 9110 sections 13.1.2 and 13.1.3, with 13.2.2's order: If-None-Match first, and
    If-Modified-Since only without it; a weak comparison)."""
    if if_none_match is not None:
        if if_none_match.strip() == b"*":
            return True
        etag = field_value(headers, b"etag")
        if etag is None:
            return False
        stored = _opaque(etag.strip())
        return any(_opaque(tag) == stored for tag in _ENTITY_TAG.findall(if_none_match))
    if if_modified_since is None:
        return False
    now = time.time()
    since = http_date(if_modified_since.strip(), now)
    if since is None or since > now:
        return False  # an invalid date, or one in the future, is ignored
    modified_raw = field_value(headers, b"last-modified") or field_value(headers, b"date")
    modified = http_date(modified_raw, now) if modified_raw is not None else None
    return modified is not None and modified <= since


def not_modified_headers(headers: RawHeaders) -> RawHeaders:
    """The stored answer's fields that its 304 carries (Last-Modified only without an ETag)."""
    has_etag = any(name == b"etag" for name, _ in headers)
    return [(name, value) for name, value in headers
            if name in _NOT_MODIFIED_FIELDS or (name == b"last-modified" and not has_etag)]


def freshened_headers(stored: RawHeaders, fresh: RawHeaders) -> RawHeaders:
    """The stored answer's fields updated from a 304 (RFC 9111 section 4.3.4): each field the 304
    carries replaces the stored field of that name, except those that frame a body or describe one
    exchange."""
    names = {name for name, _ in fresh if name not in _NOT_UPDATED}
    if not names:
        return list(stored)
    return [pair for pair in stored if pair[0] not in names] + [pair for pair in fresh if pair[0] in names]
