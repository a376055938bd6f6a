"""CORS for one route: the gateway answers preflights itself, and adds the CORS headers to every
answer (the backend's, the cache's, and its own 401s, so that a page can read why it was refused).

An origin that is not allowed gets no CORS headers at all: the browser then keeps the answer from
the page. Which origins are allowed: the listed ones exactly, ``https://*.example.com`` for any
subdomain of example.com (not example.com itself), or ``*`` for any.
"""

from __future__ import annotations

from app.auth.cors.schema import CorsSpec
from app.pipeline.exchange import Exchange, RawHeaders, Reply

ORIGIN = b"origin"
REQUEST_METHOD = b"access-control-request-method"
REQUEST_HEADERS = b"access-control-request-headers"
_MAX_KNOWN = 1024


def preflight_method(ex: Exchange) -> str | None:
    """The method a preflight asks about, or None when the request is not a preflight."""
    if ex.method != "OPTIONS" or ex.header(ORIGIN) is None:
        return None
    wanted = ex.header(REQUEST_METHOD)
    return wanted.decode("latin-1").strip().upper() if wanted else None


class CorsPolicy:
    def __init__(self, spec: CorsSpec) -> None:
        self.spec = spec
        self.any_origin = "*" in spec.origins
        self._exact = frozenset(o for o in spec.origins if "*" not in o)
        # "https://*.example.com" -> ("https://", ".example.com")
        self._wildcards = tuple((o.split("*.")[0], "." + o.split("*.")[1]) for o in spec.origins if "*." in o)
        self._known: dict[bytes, bool] = {}
        # The same for every allowed origin, made once.
        self._common: RawHeaders = []
        if spec.credentials:
            self._common.append((b"access-control-allow-credentials", b"true"))
        self._exposed: RawHeaders = [(b"access-control-expose-headers", ", ".join(spec.expose_headers).encode())] \
            if spec.expose_headers else []
        self._preflight: RawHeaders = [(b"access-control-allow-methods", ", ".join(spec.methods).encode())]
        if spec.max_age is not None:
            self._preflight.append((b"access-control-max-age", str(spec.max_age).encode()))
        self._echo_headers = "*" in spec.headers
        if spec.headers and not self._echo_headers:
            self._preflight.append((b"access-control-allow-headers", ", ".join(spec.headers).encode()))
        # With "*" and no credentials the answer is the same for every origin; else it names the
        # origin, and caches (the browser's, a CDN's) must keep one answer per origin.
        self._shared = self.any_origin and not spec.credentials
        self._vary: RawHeaders = [] if self._shared else [(b"vary", b"Origin")]

    def allows(self, origin: bytes) -> bool:
        known = self._known.get(origin)
        if known is None:
            known = self._decide(origin.decode("latin-1").lower())
            if len(self._known) >= _MAX_KNOWN:
                self._known.clear()
            self._known[origin] = known
        return known

    def _decide(self, origin: str) -> bool:
        if self.any_origin or origin in self._exact:
            return True
        for scheme, domain in self._wildcards:
            # "https://a.b.example.com" against ("https://", ".example.com"); a port, when the
            # pattern has none, leaves the origin's end unmatched.
            rest = origin[len(scheme):] if origin.startswith(scheme) else ""
            if rest.endswith(domain):
                sub = rest[:-len(domain)]
                if sub and sub[0] != "." and all(c.isalnum() or c in "-." for c in sub):
                    return True
        return False

    def _allow_origin(self, origin: bytes) -> RawHeaders:
        return [(b"access-control-allow-origin", b"*" if self._shared else origin), *self._common]

    def preflight(self, ex: Exchange) -> Reply:
        """The gateway's own answer to a preflight (204): the backend is never asked."""
        origin = ex.header(ORIGIN) or b""
        headers: RawHeaders = [(b"content-length", b"0"), *self._vary]
        if self.allows(origin):
            headers += self._allow_origin(origin)
            headers += self._preflight
            if self._echo_headers:
                asked = ex.header(REQUEST_HEADERS)
                if asked:
                    headers.append((b"access-control-allow-headers", asked))
        return Reply(204, headers)

    def headers_for(self, origin: bytes | None) -> RawHeaders:
        """What an actual (not preflight) request's answer carries."""
        if origin is None:
            return self._vary
        if not self.allows(origin):
            return self._vary
        return [*self._allow_origin(origin), *self._exposed, *self._vary]
