"""The request path as the router matches it and the backend receives it, made once at the edge.

A route prefix is a boundary only if the router and the backend read the same path. Left as the
client wrote it, ``/public/%2e%2e/secret`` matches ``/public/*`` and the backend, which resolves
dot segments itself, serves ``/secret``. So the path is normalised before routing, as RFC 3986
section 6.2.2 describes and nginx, Envoy (``normalize_path``) and Kong do: percent-encoded
unreserved characters are decoded (section 2.3), the hex digits of the other escapes upper-cased,
dot segments removed (section 5.2.4) and, by default, runs of slashes merged (nginx's
``merge_slashes``). The backend then receives that path, still percent-encoded where it must be.

Refused with ``BadPath`` (a 400) instead: a path that climbs above ``/`` (nginx answers 400 there,
where RFC 3986 would silently stop at the root), a backslash, NUL or another control character
(encoded or not), a malformed escape, and an encoded ``/`` or ``\\`` (``%2F``, ``%5C``). A backend
that decodes those into separators would see segments the router never saw (Envoy's
``path_with_escaped_slashes_action: REJECT_REQUEST``). With ``encoded_slash: pass`` they are
forwarded as they came and stay literal text in the path the router matches: never separators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

# The ASGI scope key of the path as the client sent it, set by the edge only when normalising
# changed it (the access log writes it beside the normalised one).
RECEIVED_PATH = "apigw.received_path"
# RFC 3986 section 2.3.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ENCODED_SLASHES = frozenset((0x2F, 0x5C))
_ESCAPE = re.compile(r"%(..)?", re.DOTALL)
_HEX = frozenset("0123456789ABCDEFabcdef")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The escapes the path matched by the router keeps undecoded with ``encoded_slash: pass``.
_KEPT_ESCAPES = re.compile(r"(%2F|%5C)")
# What a path that normalising would change holds: one scan where four ``in`` tests on bytes took
# four times as long (CPython raises and clears a TypeError inside each one).
_NOT_PLAIN = re.compile(rb"%|/\.|//|\\")


class BadPath(ValueError):
    """A request path the gateway refuses (400); the message says why."""


@dataclass(frozen=True, slots=True)
class PathRules:
    merge_slashes: bool = True
    # Forward %2F and %5C as they came (never decoded for matching) instead of refusing them.
    pass_encoded_slash: bool = False


@dataclass(frozen=True, slots=True)
class NormalPath:
    # What the router matches: the normalised path with its escapes decoded (ASGI's ``path``),
    # except %2F and %5C under ``encoded_slash: pass``.
    decoded: str
    # What the backend receives: the normalised path, percent-encoded (ASCII).
    encoded: bytes


def is_plain(raw: bytes) -> bool:
    """True for a path that normalising leaves as it is, as most are: no escape, no dot segment,
    no repeated slash, no backslash. (llhttp has already refused raw control characters, spaces
    and bytes above 0x7F in the request target.)"""
    return _NOT_PLAIN.search(raw) is None


def normalise(raw: bytes, rules: PathRules) -> NormalPath:
    """The normalised form of an origin-form path (it starts with ``/``); BadPath when refused."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise BadPath("path is not ASCII") from None
    if "\\" in text:
        raise BadPath("backslash in path")
    if _CONTROL.search(text):
        raise BadPath("control character in path")
    if "%" in text:
        text = _ESCAPE.sub(lambda m: _escape(m, rules.pass_encoded_slash), text)
    encoded = _remove_dot_segments(text, rules.merge_slashes)
    if "%" not in encoded:
        return NormalPath(encoded, encoded.encode("ascii"))
    if rules.pass_encoded_slash:
        pieces = _KEPT_ESCAPES.split(encoded)  # the kept escapes at the odd indexes
        decoded = "".join(p if i % 2 else unquote(p) for i, p in enumerate(pieces))
    else:
        decoded = unquote(encoded)
    return NormalPath(decoded, encoded.encode("ascii"))


def _escape(match: re.Match[str], pass_encoded_slash: bool) -> str:
    digits = match.group(1)
    if digits is None or digits[0] not in _HEX or digits[1] not in _HEX:
        raise BadPath("malformed percent-encoding in path")
    value = int(digits, 16)
    if value in _UNRESERVED:
        return chr(value)
    if value < 0x20 or value == 0x7F:
        raise BadPath("encoded control character in path")
    if value in _ENCODED_SLASHES and not pass_encoded_slash:
        raise BadPath("encoded slash or backslash in path (%2F, %5C)")
    return "%" + digits.upper()


def _remove_dot_segments(path: str, merge_slashes: bool) -> str:
    """RFC 3986 section 5.2.4 on a path starting with "/", refusing a climb above the root;
    empty segments dropped when merging slashes (a trailing slash is kept)."""
    segments = path.split("/")
    last = len(segments) - 1
    out: list[str] = []
    for i, segment in enumerate(segments[1:], 1):
        if segment == ".":
            if i == last:
                out.append("")
        elif segment == "..":
            if not out:
                raise BadPath("path climbs above /")
            out.pop()
            if i == last:
                out.append("")
        elif segment or i == last or not merge_slashes:
            out.append(segment)
    return "/" + "/".join(out)


def strip_segments(path: str, count: int) -> str:
    """``path`` without its first ``count`` segments (empty ones are not counted): what a prefix
    route with ``strip_prefix`` forwards. Always starts with "/"."""
    rest = path
    for _ in range(count):
        rest = rest.lstrip("/")
        cut = rest.find("/")
        rest = "" if cut < 0 else rest[cut:]
    return rest if rest.startswith("/") else "/" + rest
