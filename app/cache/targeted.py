"""Targeted cache-control fields (RFC 9213): ``CDN-Cache-Control``, and the gateway's own field
when ``cache.targeted_field`` names one.

The cache's target list is its own field first, then ``CDN-Cache-Control``. The first field of the
list that a response carries with a valid, non-empty value decides how the response is cached, and
``Cache-Control`` and ``Expires`` are then ignored (section 2.1); with none, they decide as usual.
A targeted field is a Structured Fields Dictionary (RFC 8941 section 3.2): one that does not parse
is ignored as if absent (section 2.2), and so is a member's parameters. A directive whose value
has the wrong type is ignored, except a lifetime (``max-age``, ``s-maxage``) that is not a
non-negative Integer: as with ``Cache-Control`` (freshness.py), a lifetime that cannot be read makes
the response stale rather than long-lived.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from hishel._core._headers import CacheControl

from app.cache.freshness import DeltaDirectives

CDN_CACHE_CONTROL = b"cdn-cache-control"

_BOOLEANS = {"no-store": "no_store", "public": "public", "must-revalidate": "must_revalidate",
             "proxy-revalidate": "proxy_revalidate", "immutable": "immutable", "no-transform": "no_transform",
             "must-understand": "must_understand"}
_FIELD_LISTS = {"no-cache": "no_cache", "private": "private"}
_SECONDS = {"stale-while-revalidate": "stale_while_revalidate", "stale-if-error": "stale_if_error"}
_LARGEST = 2**31


@dataclass(frozen=True, slots=True)
class TargetedPolicy:
    """What a valid targeted field says, in the shapes ``Cache-Control``'s parse gives."""

    control: CacheControl
    deltas: DeltaDirectives


_PARSED: dict[bytes, TargetedPolicy | None] = {}
_PARSED_KEPT = 512


def targeted_policy(value: bytes) -> TargetedPolicy | None:
    """The policy a targeted field's value (its lines joined) gives; None when it is empty or no
    valid Dictionary (the field is then as if absent). Kept per value: backends repeat theirs.
    Shared: never to be changed."""
    if value in _PARSED:
        return _PARSED[value]
    if len(_PARSED) >= _PARSED_KEPT:
        _PARSED.clear()
    try:
        members = parse_dictionary(value.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        members = None
    policy = _PARSED[value] = _policy(members) if members else None
    return policy


class Token(str):
    """An sf-token, told apart from an sf-string."""


def _policy(members: dict[str, Any]) -> TargetedPolicy:
    control = CacheControl()
    max_age = s_maxage = None
    invalid = False
    for name, value in members.items():
        if name in _BOOLEANS:
            if value is True:
                setattr(control, _BOOLEANS[name], True)
        elif name in _FIELD_LISTS:
            if value is True:
                setattr(control, _FIELD_LISTS[name], True)
            elif isinstance(value, str) and not isinstance(value, Token):
                names = [part.strip() for part in value.split(",") if part.strip()]
                setattr(control, _FIELD_LISTS[name], names)
        elif name in _SECONDS:
            if _is_integer(value) and value >= 0:
                setattr(control, _SECONDS[name], min(value, _LARGEST))
        elif name in ("max-age", "s-maxage"):
            if not _is_integer(value) or value < 0:
                invalid = True
                value = 0
            seconds = min(value, _LARGEST)
            if name == "max-age":
                max_age = seconds
            else:
                s_maxage = seconds
    control.max_age, control.s_maxage = max_age, s_maxage
    return TargetedPolicy(control, DeltaDirectives(max_age, s_maxage, invalid))


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- RFC 8941: a Dictionary --------------------------------------------------------------------

_LCALPHA = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset("0123456789")
_KEY_FIRST = _LCALPHA | {"*"}
_KEY_REST = _LCALPHA | _DIGITS | frozenset("_-.*")
_ALPHA = _LCALPHA | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TCHAR = _ALPHA | _DIGITS | frozenset("!#$%&'*+-.^_`|~")
_TOKEN_REST = _TCHAR | frozenset(":/")
_BASE64 = _ALPHA | _DIGITS | frozenset("+/=")


def parse_dictionary(text: str) -> dict[str, Any]:
    """RFC 8941 section 4.2.2 (with the leading and trailing spaces of section 4.2 discarded);
    ValueError when ``text`` is no Dictionary. Values: True/False, int, float, str (a string),
    Token, bytes, or a list (an inner list); parameters are checked and dropped."""
    text = text.strip(" ")
    members: dict[str, Any] = {}
    i, n = 0, len(text)
    while i < n:
        key, i = _key(text, i)
        value: Any
        if i < n and text[i] == "=":
            if i + 1 < n and text[i + 1] == "(":
                value, i = _inner_list(text, i + 1)
            else:
                value, i = _bare_item(text, i + 1)
        else:
            value = True
        i = _parameters(text, i)
        members[key] = value
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        if text[i] != ",":
            raise ValueError(f"expected ',' at {i}")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            raise ValueError("trailing comma")
    return members


def _key(text: str, i: int) -> tuple[str, int]:
    if i >= len(text) or text[i] not in _KEY_FIRST:
        raise ValueError(f"expected a key at {i}")
    start = i
    i += 1
    while i < len(text) and text[i] in _KEY_REST:
        i += 1
    return text[start:i], i


def _parameters(text: str, i: int) -> int:
    while i < len(text) and text[i] == ";":
        i += 1
        while i < len(text) and text[i] == " ":
            i += 1
        _, i = _key(text, i)
        if i < len(text) and text[i] == "=":
            _, i = _bare_item(text, i + 1)
    return i


def _inner_list(text: str, i: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    i += 1  # "("
    n = len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        if i < n and text[i] == ")":
            return items, _parameters(text, i + 1)
        item, i = _bare_item(text, i)
        items.append(item)
        i = _parameters(text, i)
        if i < n and text[i] not in " )":
            raise ValueError(f"expected ' ' or ')' at {i}")
    raise ValueError("unterminated inner list")


def _bare_item(text: str, i: int) -> tuple[Any, int]:
    if i >= len(text):
        raise ValueError("expected an item")
    c = text[i]
    if c == "-" or c in _DIGITS:
        return _number(text, i)
    if c == '"':
        return _string(text, i)
    if c in _ALPHA or c == "*":
        start = i
        i += 1
        while i < len(text) and text[i] in _TOKEN_REST:
            i += 1
        return Token(text[start:i]), i
    if c == ":":
        end = text.find(":", i + 1)
        if end < 0 or any(ch not in _BASE64 for ch in text[i + 1:end]):
            raise ValueError("invalid byte sequence")
        return base64.b64decode(text[i + 1:end] + "=" * (-(end - i - 1) % 4)), end + 1
    if c == "?":
        if text[i + 1:i + 2] in ("0", "1"):
            return text[i + 1] == "1", i + 2
        raise ValueError("invalid boolean")
    raise ValueError(f"unexpected {c!r} at {i}")


def _number(text: str, i: int) -> tuple[int | float, int]:
    start = i
    if text[i] == "-":
        i += 1
    digits_start = i
    while i < len(text) and (text[i] in _DIGITS or text[i] == "."):
        i += 1
    number = text[digits_start:i]
    if not number or number[0] not in _DIGITS:
        raise ValueError("invalid number")
    whole, dot, fraction = number.partition(".")
    if not dot:
        if len(whole) > 15:
            raise ValueError("integer too long")
        return int(text[start:i]), i
    if len(whole) > 12 or not 1 <= len(fraction) <= 3 or "." in fraction:
        raise ValueError("invalid decimal")
    return float(text[start:i]), i


def _string(text: str, i: int) -> tuple[str, int]:
    out = []
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            if text[i + 1:i + 2] not in ('"', "\\"):
                raise ValueError("invalid escape")
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        elif " " <= c <= "~":
            out.append(c)
            i += 1
        else:
            raise ValueError("invalid character in string")
    raise ValueError("unterminated string")
