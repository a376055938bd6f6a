"""Whether the certificate, key and CA files a config names can be loaded: checked when the config
is loaded (check-config, start, reload), so that a bad file is an error naming its field rather than
a failed handshake later. The contexts themselves are made by app/edge/tls.py."""

from __future__ import annotations

import ssl


def check_server_files(cert: str, key: str, client_ca: str | None) -> None:
    """Raise ValueError naming what cannot be loaded (the config's check, before anything serves)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:
        raise ValueError(f"cert, key: cannot load the certificate and key: {error}") from None
    if client_ca is not None:
        _check_ca(context, client_ca, "client_ca")


def check_backend_files(ca: str | None, client_cert: str | None, client_key: str | None) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        _check_ca(context, ca, "ca")
    if client_cert is not None:
        try:
            context.load_cert_chain(client_cert, client_key)
        except (ssl.SSLError, OSError) as error:
            raise ValueError(f"client_cert, client_key: cannot load the certificate and key: {error}") from None


def _check_ca(context: ssl.SSLContext, path: str, name: str) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as error:
        raise ValueError(f"{name}: not a PEM file of CA certificates: {error}") from None
