"""TLS on both sides: HTTPS on the data listener (mutual TLS, minimum version, a certificate swapped
by SIGHUP) and ``https://`` backends (verified, with the route's CA, SNI and a client certificate).
Certificates come from trustme: test CAs made in memory for each test."""

from __future__ import annotations

import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from aiohttp import web

from app.config import ConfigError, parse_config
from tests.support import (
    BackendServer,
    GatewayProcess,
    GatewayThread,
    ThreadServer,
    wait_for,
)

TOKEN = "tls-test-admin-token-0123456"


def _write_pair(cert: trustme.LeafCert, directory: Path, name: str) -> tuple[str, str]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_path))
    return str(cert_path), str(key_path)


def _ca_file(ca: trustme.CA, directory: Path, name: str) -> str:
    path = directory / f"{name}.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _client_context(ca: trustme.CA, cert: trustme.LeafCert | None = None,
                    max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    if max_version is not None:
        context.maximum_version = max_version
    return context


def _served_serial(port: int, trust: ssl.SSLContext) -> int:
    """The serial number of the certificate a new connection is shown."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            trust.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    from cryptography import x509
    return x509.load_der_x509_certificate(der).serial_number


class HttpsBackend(ThreadServer):
    """An aiohttp backend over TLS that records the SNI name of each handshake and answers with the
    client certificate it was shown (when it asks for one)."""

    def __init__(self, cert: trustme.LeafCert, client_ca: trustme.CA | None = None) -> None:
        super().__init__()
        self.sni: list[str | None] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        if client_ca is not None:
            client_ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED
        context.sni_callback = lambda _obj, name, _ctx: self.sni.append(name)
        self.context = context
        self.runner: web.AppRunner | None = None

    async def _start(self) -> int:
        async def answer(request: web.Request) -> web.Response:
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            subject = dict(item[0] for item in peer["subject"]) if peer else None
            return web.json_response({"path": request.path, "client_cert": subject,
                                      "forwarded_proto": request.headers.get("X-Forwarded-Proto")})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.context)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def start(self) -> HttpsBackend:
        self.thread.start()
        self.port = self.run(self._start())
        return self

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def stop(self) -> None:
        if self.runner is not None:
            self.run(self.runner.cleanup())
        super().stop()

    def __enter__(self) -> HttpsBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture()
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture()
def backend() -> Iterator[BackendServer]:
    with BackendServer("plain") as server:
        yield server


def _tls_gateway(backend_url: str, tls: dict[str, Any], **route: Any) -> dict[str, Any]:
    return {"server": {"tls": tls, "access_log": False},
            "router": {"routes": [{"path": "/api/*", "target": backend_url, "strip_prefix": True,
                                   "cache": {"enabled": False}, **route}]}}


def _https(gateway: GatewayThread) -> str:
    return f"https://localhost:{gateway.port}"


# -- the data listener ---------------------------------------------------------------------------

def test_an_https_client_is_served_and_plain_http_is_not(ca: trustme.CA, backend: BackendServer,
                                                          tmp_path: Path) -> None:
    cert, key = _write_pair(ca.issue_cert("localhost"), tmp_path, "gateway")
    config = parse_config(_tls_gateway(backend.url, {"cert": cert, "key": key}), {})
    with GatewayThread(config) as gateway:
        with httpx.Client(verify=_client_context(ca), timeout=5) as client:
            answer = client.get(f"{_https(gateway)}/api/anything")
            assert answer.status_code == 200
            assert answer.json()["headers"]["X-Forwarded-Proto"] == "https"
        # Plain HTTP on the TLS port is no request at all: nothing reaches the backend.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{gateway.port}/api/anything", timeout=5)
        # A client that does not trust the gateway's CA refuses it.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{_https(gateway)}/api/anything", verify=_client_context(trustme.CA()), timeout=5)
        assert backend.hits == {"/anything": 1}


def test_min_version_refuses_older_clients(ca: trustme.CA, backend: BackendServer, tmp_path: Path) -> None:
    cert, key = _write_pair(ca.issue_cert("localhost"), tmp_path, "gateway")
    config = parse_config(_tls_gateway(backend.url, {"cert": cert, "key": key, "min_version": "TLSv1.3"}), {})
    with GatewayThread(config) as gateway:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{_https(gateway)}/api/x", verify=_client_context(ca, max_version=ssl.TLSVersion.TLSv1_2),
                      timeout=5)
        assert httpx.get(f"{_https(gateway)}/api/x", verify=_client_context(ca), timeout=5).status_code == 200
        assert backend.hits == {"/x": 1}


def test_mutual_tls_refuses_a_client_without_a_certificate(ca: trustme.CA, backend: BackendServer,
                                                           tmp_path: Path) -> None:
    clients = trustme.CA()
    cert, key = _write_pair(ca.issue_cert("localhost"), tmp_path, "gateway")
    tls = {"cert": cert, "key": key, "client_ca": _ca_file(clients, tmp_path, "clients")}
    with GatewayThread(parse_config(_tls_gateway(backend.url, tls), {})) as gateway:
        url = f"{_https(gateway)}/api/x"
        # No certificate; one from a CA the gateway does not accept: refused in the handshake (with
        # TLS 1.3 the refusal comes as the client reads its answer).
        for shown in (None, trustme.CA().issue_cert("intruder@example.com")):
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                httpx.get(url, verify=_client_context(ca, shown), timeout=5)
        assert backend.hits == {}
        accepted = httpx.get(url, verify=_client_context(ca, clients.issue_cert("alice@example.com")), timeout=5)
        assert accepted.status_code == 200
        assert backend.hits == {"/x": 1}


def test_bad_tls_files_are_config_errors_naming_the_field(ca: trustme.CA, tmp_path: Path) -> None:
    cert, key = _write_pair(ca.issue_cert("localhost"), tmp_path, "gateway")
    other_cert, other_key = _write_pair(ca.issue_cert("other"), tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        ({"cert": str(tmp_path / "missing.crt"), "key": key}, "server.tls.cert", "no such file"),
        ({"cert": cert, "key": other_key}, "server.tls", "cannot load the certificate and key"),
        ({"cert": cert, "key": key, "client_ca": str(garbage)}, "server.tls", "client_ca: not a PEM file"),
        ({"cert": cert, "key": key, "min_version": "TLSv1.1"}, "server.tls.min_version", "TLSv1.2"),
    ]
    for tls, field, why in cases:
        with pytest.raises(ConfigError) as error:
            parse_config({"server": {"tls": tls}}, {})
        assert any(path == field and why in reason for path, reason in error.value.problems), (tls, error.value)
    route = {"path": "/a/*", "target": "http://plain:80", "ca": _ca_file(ca, tmp_path, "ca")}
    with pytest.raises(ConfigError, match="for https:// targets"):
        parse_config({"router": {"routes": [route]}}, {})
    with pytest.raises(ConfigError, match="client_cert and client_key go together"):
        parse_config({"router": {"routes": [{"path": "/a/*", "target": "https://x:1", "client_cert": other_cert}]}}, {})


def test_sighup_swaps_the_served_certificate(ca: trustme.CA, backend: BackendServer, tmp_path: Path) -> None:
    first = ca.issue_cert("localhost")
    cert, key = _write_pair(first, tmp_path, "gateway")
    trust = _client_context(ca)
    config = {**_tls_gateway(backend.url, {"cert": cert, "key": key}), "admin": {"token": TOKEN}}
    with GatewayProcess(config, tls=trust) as gateway, httpx.Client(verify=trust, timeout=5) as client:
        before = _served_serial(gateway.port, trust)
        # A kept-alive connection, made on the first certificate.
        assert client.get(f"{gateway.url}/api/x").status_code == 200

        renewed = ca.issue_cert("localhost")
        _write_pair(renewed, tmp_path, "gateway")  # same paths, as a renewal writes them
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _served_serial(gateway.port, trust) != before, what="the renewed certificate")
        from cryptography import x509
        assert _served_serial(gateway.port, trust) == x509.load_pem_x509_certificate(
            renewed.cert_chain_pems[0].bytes()).serial_number
        assert client.get(f"{gateway.url}/api/x").status_code == 200

        # A certificate file that no longer loads: the reload is refused, the renewed pair stays served.
        Path(cert).write_text("truncated\n")
        answer = client.post(f"{gateway.url}/_gateway/config/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 400
        assert answer.json()["applied"] is False
        assert any(f["field"] == "server.tls" for f in answer.json()["fields"])
        assert _served_serial(gateway.port, trust) != before
        assert client.get(f"{gateway.url}/api/x").status_code == 200


# -- https:// backends ---------------------------------------------------------------------------

def _plain_gateway(backend_url: str, **route: Any) -> Any:
    return parse_config({"server": {"access_log": False}, "router": {"routes": [
        {"path": "/api/*", "target": backend_url, "strip_prefix": True, "cache": {"enabled": False}, **route}]}}, {})


def test_an_https_backend_is_verified_by_default_and_trusted_with_the_routes_ca(tmp_path: Path) -> None:
    backend_ca = trustme.CA()
    with HttpsBackend(backend_ca.issue_cert("localhost")) as origin:
        # A CA the system does not know: refused, and the answer says why.
        with GatewayThread(_plain_gateway(origin.url)) as gateway:
            answer = httpx.get(f"{gateway.url}/api/x", timeout=10)
            assert answer.status_code == 502
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["error"] == "backend TLS handshake failed"
            assert "certificate verify failed" in answer.json()["tls"]
        # The route's ca: trusted, with the target's host name sent as SNI.
        origin.sni.clear()
        ca_path = _ca_file(backend_ca, tmp_path, "backend-ca")
        with GatewayThread(_plain_gateway(origin.url, ca=ca_path)) as gateway:
            answer = httpx.get(f"{gateway.url}/api/x", timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"path": "/x", "client_cert": None, "forwarded_proto": "http"}
        assert origin.sni and set(origin.sni) == {"localhost"}


def test_an_https_backend_with_a_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    backend_ca = trustme.CA()
    with HttpsBackend(backend_ca.issue_cert("billing.internal")) as origin, \
            GatewayThread(_plain_gateway(origin.url, ca=_ca_file(backend_ca, tmp_path, "ca"))) as gateway:
        answer = httpx.get(f"{gateway.url}/api/x", timeout=10)
        assert answer.status_code == 502
        assert "localhost" in answer.json()["tls"]  # "Hostname mismatch, certificate is not valid for 'localhost'"


def test_a_routes_client_certificate_is_presented_to_the_backend(tmp_path: Path) -> None:
    backend_ca, gateway_ca = trustme.CA(), trustme.CA()
    client_cert, client_key = _write_pair(gateway_ca.issue_cert("gateway@example.com"), tmp_path, "client")
    ca_path = _ca_file(backend_ca, tmp_path, "backend-ca")
    with HttpsBackend(backend_ca.issue_cert("localhost"), client_ca=gateway_ca) as origin:
        with GatewayThread(_plain_gateway(origin.url, ca=ca_path)) as gateway:
            refused = httpx.get(f"{gateway.url}/api/x", timeout=10)
            assert refused.status_code == 502  # the backend wants a certificate the route has not
        with GatewayThread(_plain_gateway(origin.url, ca=ca_path, client_cert=client_cert,
                                          client_key=client_key)) as gateway:
            answer = httpx.get(f"{gateway.url}/api/x", timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json()["client_cert"] is not None
