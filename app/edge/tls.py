"""TLS on both sides of the gateway: the data listener's context, whose certificate a reload reads
again, and the contexts for ``https://`` backends (verified always; the route's CA or the system's;
the route's client certificate when it has one).

Python's ``ssl`` does the work: ``load_cert_chain`` on a context already serving makes every later
handshake present the new certificate, while connections already made keep theirs.
"""

from __future__ import annotations

import ssl

from app.config import ConfigError, TlsSection

VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class ServerTls:
    """The data listener's SSLContext. Its client CA and minimum version are set once (a restart
    changes them); its certificate and key are read again by ``load``."""

    def __init__(self, section: TlsSection) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = VERSIONS[section.min_version]
        context.set_alpn_protocols(["http/1.1"])
        if section.client_ca is not None:
            context.load_verify_locations(cafile=section.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        self.context = context
        self.load(section)

    def load(self, section: TlsSection) -> None:
        """Serve ``section``'s certificate and key from the next handshake on; on a failure the
        context keeps the pair it had."""
        try:
            self.context.load_cert_chain(section.cert, section.key)
        except (ssl.SSLError, OSError) as error:
            reason = f"cannot load the certificate and key: {error}"
            raise ConfigError(f"server.tls.cert: {reason}", [("server.tls.cert", reason)]) from None


def backend_context(ca: str | None, client_cert: str | None, client_key: str | None) -> ssl.SSLContext | bool:
    """What a route's ``https://`` targets are checked with. ``True`` (aiohttp's default: the
    system's CAs, the host name checked, SNI sent) unless the route names a CA or a client
    certificate. Never unverified."""
    if ca is None and client_cert is None:
        return True
    context = ssl.create_default_context(cafile=ca)
    if client_cert is not None:
        context.load_cert_chain(client_cert, client_key)
    return context
