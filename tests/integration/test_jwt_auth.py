"""JWT verification against a real JWKS served over HTTP by a local server, keys rotated while the
test runs; HS256, RS256, ES256 and EdDSA; the claims; ``none`` and algorithm confusion refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from app.auth.consumer import Consumer, Verdict
from app.auth.jwt_auth.handler import JwtAuth
from app.auth.jwt_auth.keys import JwksSource
from app.auth.jwt_auth.schema import JwtSpec
from app.pipeline.exchange import Exchange
from tests.jwt_keys import AUDIENCE, ISSUER, SigningKey

class IdentityProvider:
    """A JWKS endpoint on a real socket; ``keys`` may be changed while it runs (a rotation)."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.fetches = 0
        self.url = ""

    async def jwks(self, _: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response({"keys": [k.jwk for k in self.keys]})


@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    provider = IdentityProvider()
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", provider.jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    provider.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    yield provider
    await runner.cleanup()


async def _auth(idp: IdentityProvider, **spec: Any) -> JwtAuth:
    source = JwksSource(JwtSpec(jwks_url=idp.url, issuer=ISSUER, audience=AUDIENCE, **spec))
    await source.start()
    return JwtAuth(source.spec, source)


def _ex(token: str | bytes) -> Exchange:
    value = token if isinstance(token, bytes) else f"Bearer {token}".encode()
    return Exchange(method="GET", path="/", raw_path=b"/", query_string=b"",
                    headers=[(b"authorization", value)], client_addr="127.0.0.1")


async def _check(auth: JwtAuth, token: str | bytes) -> Consumer | Verdict:
    ex = _ex(token)
    verdict = auth.authenticate(ex)
    if verdict is Verdict.UNKNOWN_KEY:
        verdict = await auth.authenticate_with_new_keys(ex)
    return verdict


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA", "HS256"])
async def test_each_algorithm_verifies_and_names_the_consumer(idp: IdentityProvider, alg: str) -> None:
    key = SigningKey("k1", alg)
    idp.keys = [key]
    auth = await _auth(idp)
    try:
        consumer = await _check(auth, key.sign(roles=["admin", "ops"], tier="gold"))
        assert consumer == Consumer("alice", "gold", frozenset({"admin", "ops"}), "jwt")
        assert (await _check(auth, key.sign(sub="bob", roles="read write"))) == \
            Consumer("bob", None, frozenset({"read", "write"}), "jwt")  # a scope-like string
    finally:
        await auth.keys.close()


@pytest.mark.parametrize(("claims", "valid"), [
    ({"exp": -10}, True),  # expired 10 s ago: inside the 30 s leeway
    ({"exp": -60}, False),
    ({"nbf": 20}, True),
    ({"nbf": 120}, False),
    ({"iss": "https://evil.test/"}, False),
    ({"iss": None}, False),
    ({"aud": "other-api"}, False),
    ({"aud": ["other-api", AUDIENCE]}, True),
    ({"aud": None}, False),
    ({"exp": None}, False),  # a token that never expires is not accepted
    ({"sub": None}, False),
    ({"roles": {"admin": True}}, False),
])
async def test_claims_are_checked_with_the_leeway(idp: IdentityProvider, claims: dict[str, Any], valid: bool) -> None:
    key = SigningKey("k1", "ES256")
    idp.keys = [key]
    auth = await _auth(idp, leeway=30)
    now = int(time.time())
    relative = {k: now + v if k in ("exp", "nbf") and v is not None else v for k, v in claims.items()}
    try:
        verdict = await _check(auth, key.sign(**relative))
        assert isinstance(verdict, Consumer) is valid, verdict
    finally:
        await auth.keys.close()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _forged(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> bytes:
    signing_input = _b64(json.dumps(header).encode()) + b"." + _b64(json.dumps(payload).encode())
    signature = _b64(hmac.new(secret, signing_input, hashlib.sha256).digest()) if secret is not None else b""
    return b"Bearer " + signing_input + b"." + signature


async def test_alg_none_and_algorithm_confusion_are_refused(idp: IdentityProvider) -> None:
    rsa_key = SigningKey("rsa1", "RS256")
    idp.keys = [rsa_key]
    auth = await _auth(idp)
    payload = jwt.decode(rsa_key.sign(), options={"verify_signature": False})
    public_pem = rsa_key.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        assert isinstance(await _check(auth, rsa_key.sign()), Consumer)
        assert await _check(auth, _forged({"alg": "none", "kid": "rsa1"}, payload, None)) is Verdict.INVALID
        assert await _check(auth, _forged({"alg": "None", "kid": "rsa1"}, payload, None)) is Verdict.INVALID
        # HS256 "signed" with the RSA key's public PEM, which anyone can download from the JWKS.
        assert await _check(auth, _forged({"alg": "HS256", "kid": "rsa1"}, payload, public_pem)) is Verdict.INVALID
        assert await _check(auth, _forged({"alg": "HS256"}, payload, public_pem)) is Verdict.INVALID
        assert await _check(auth, b"Bearer not.a.jwt") is Verdict.INVALID
        assert await _check(auth, b"Basic YWxpY2U6cHc=") is Verdict.ABSENT
    finally:
        await auth.keys.close()


async def test_keys_rotate_without_a_restart(idp: IdentityProvider) -> None:
    old, new = SigningKey("2026-01", "RS256"), SigningKey("2026-02", "RS256")
    idp.keys = [old]
    auth = await _auth(idp, jwks_refetch_interval=0.3)
    try:
        old_token = old.sign()
        assert isinstance(await _check(auth, old_token), Consumer)
        assert idp.fetches == 1
        # The provider rotates: it publishes the new key and signs with it.
        idp.keys = [old, new]
        assert await _check(auth, new.sign()) is Verdict.INVALID  # the set was read less than 0.3 s ago
        assert idp.fetches == 1
        time.sleep(0.35)
        assert isinstance(await _check(auth, new.sign()), Consumer)
        assert idp.fetches == 2
        # Then it drops the old key: a token of a removed key stops working once the set is read again.
        idp.keys = [new]
        time.sleep(0.35)
        third = SigningKey("2026-03", "RS256")
        assert await _check(auth, third.sign()) is Verdict.INVALID  # unknown even after reading again
        assert idp.fetches == 3
        assert await _check(auth, old_token) is Verdict.INVALID  # the kept verdict went with the key
    finally:
        await auth.keys.close()


async def test_unknown_kids_read_the_set_at_most_once_per_interval(idp: IdentityProvider) -> None:
    idp.keys = [SigningKey("real", "ES256")]
    auth = await _auth(idp, jwks_refetch_interval=0.5)
    try:
        assert idp.fetches == 1
        time.sleep(0.55)
        for i in range(20):
            assert await _check(auth, SigningKey(f"made-up-{i}", "ES256").sign()) is Verdict.INVALID
        assert idp.fetches == 2  # one read for the first unknown kid, none for the next 19
    finally:
        await auth.keys.close()


async def test_a_verified_token_is_not_verified_again_until_it_expires(idp: IdentityProvider) -> None:
    key = SigningKey("k", "RS256")
    idp.keys = [key]
    auth = await _auth(idp, leeway=0)
    try:
        token = key.sign(exp=int(time.time()) + 2)
        for _ in range(5):
            assert isinstance(await _check(auth, token), Consumer)
        assert auth.verifications == 1
        time.sleep(2.1)
        assert await _check(auth, token) is Verdict.INVALID
        assert auth.verifications == 2
    finally:
        await auth.keys.close()


async def test_an_unreachable_provider_refuses_tokens_and_keeps_known_keys(idp: IdentityProvider) -> None:
    key = SigningKey("k", "EdDSA")
    idp.keys = [key]
    auth = await _auth(idp, jwks_refetch_interval=0)
    try:
        assert isinstance(await _check(auth, key.sign()), Consumer)
        good_url = idp.url
        auth.keys.spec = auth.keys.spec.model_copy(update={"jwks_url": good_url.replace("jwks.json", "gone")})
        assert await _check(auth, SigningKey("k2", "EdDSA").sign()) is Verdict.INVALID  # the read failed (404)
        assert isinstance(await _check(auth, key.sign(sub="carol")), Consumer)  # known keys still work
    finally:
        await auth.keys.close()


async def test_keys_from_a_file(tmp_path: Path) -> None:
    key = SigningKey("file-key", "ES256")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [key.jwk, {"kty": "RSA", "use": "enc", "kid": "x", "n": "AQ", "e": "AQAB"}]}))
    source = JwksSource(JwtSpec(jwks_file=str(path), jwks_refetch_interval=0))
    await source.start()
    auth = JwtAuth(source.spec, source)
    assert isinstance(await _check(auth, key.sign(iss=None, aud=None)), Consumer)
    rotated = SigningKey("file-key-2", "ES256")
    path.write_text(json.dumps({"keys": [rotated.jwk]}))
    assert isinstance(await _check(auth, rotated.sign()), Consumer)
