"""``Surrogate-Control`` (the W3C Edge Architecture Specification 1.0): the field an origin writes
for the reverse proxies in front of it, read after the RFC 9213 targeted fields (targeted.py).

Its directives are a comma-separated list, each optionally addressed to one surrogate by a
``;device`` suffix. The gateway announces no device token (no ``Surrogate-Capability``), so a
directive addressed to a device is someone else's. The ones it reads: ``no-store``, and
``max-age=N`` or ``max-age=N+M`` (fresh for N seconds, then usable for M more when the origin
fails: stale-if-error). Names are case-insensitive; a ``max-age`` whose argument is not
delta-seconds makes the answer stale, as in ``Cache-Control`` (freshness.py). A field with no
directive for the gateway is as if absent, and ``Cache-Control`` decides. When one applies, it
takes the place of ``Cache-Control`` and ``Expires``, as a targeted field does.
"""

from __future__ import annotations

import re

from hishel._core._headers import CacheControl

from app.cache.freshness import DeltaDirectives
from app.cache.targeted import TargetedPolicy

SURROGATE_CONTROL = b"surrogate-control"

# The comma-separated items; a comma inside a quoted string (content="ESI/1.0, ...") separates nothing.
_ITEM = re.compile(rb'(?:[^,"]|"(?:[^"\\]|\\.)*")+')
_MAX_AGE = re.compile(rb"([0-9]+)(?:\+([0-9]+))?")
_LARGEST = 2**31

_PARSED: dict[bytes, TargetedPolicy | None] = {}
_PARSED_KEPT = 512


def surrogate_policy(value: bytes) -> TargetedPolicy | None:
    """The policy the directives of a Surrogate-Control value (its lines joined) addressed to no
    device give; None when there are none. Kept per value: origins repeat theirs. Shared: never to
    be changed."""
    if value in _PARSED:
        return _PARSED[value]
    if len(_PARSED) >= _PARSED_KEPT:
        _PARSED.clear()
    policy = _PARSED[value] = _parse(value)
    return policy


def _parse(value: bytes) -> TargetedPolicy | None:
    control = CacheControl()
    max_age: int | None = None
    invalid = found = False
    for item in _ITEM.findall(value):
        directive, semicolon, device = item.strip().partition(b";")
        if semicolon and device.strip():
            continue  # addressed to another surrogate
        name, equals, argument = directive.partition(b"=")
        key = name.lower()
        if key == b"no-store" and not equals:
            control.no_store = found = True
        elif key.rstrip() == b"max-age" and max_age is None and not invalid:
            found = True
            match = _MAX_AGE.fullmatch(argument) if equals and key == key.rstrip() else None
            if match is None:
                invalid, max_age = True, 0
                continue
            max_age = min(int(match[1]), _LARGEST)
            if match[2] is not None:
                control.stale_if_error = min(int(match[2]), _LARGEST)
    if not found:
        return None
    control.max_age = max_age
    return TargetedPolicy(control, DeltaDirectives(max_age, None, invalid))
