"""The keys JWTs are verified with: a JWKS document from a URL or a file, kept in memory.

Keys rotate without a restart: a token whose ``kid`` no kept key has makes the set be read again,
at most once per ``jwks_refetch_interval`` (tokens with made-up kids cannot make the gateway hammer
the identity provider), and a set older than ``jwks_max_age`` is read again in the background, so
removed keys go. A read that fails keeps the keys already known; a JWKS that reads well is the
truth, even when it removed keys.

The fetch is aiohttp's, on the event loop (PyJWT's own ``PyJWKClient`` fetches with blocking
urllib, which would stop every request while the identity provider answers). PyJWT parses the keys:
each ``PyJWK`` is bound to one algorithm, its ``alg`` or what its key type implies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from app.auth.jwt_auth.schema import JwtSpec

log = logging.getLogger("apigw.auth.jwks")


class JwksError(Exception):
    """The JWKS could not be read (unreachable, not JSON, not a key set)."""


def parse_jwks(document: Any, algorithms: list[str]) -> dict[str | None, PyJWK]:
    """The usable signing keys of a JWKS, by kid (None for a key without one). Keys for encryption,
    of a kind PyJWT can't read, or bound to an algorithm not in ``algorithms`` are left out."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("not a JWK set (no 'keys' list)")
    keys: dict[str | None, PyJWK] = {}
    for data in document["keys"]:
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        try:
            key = PyJWK(data)
        except PyJWTError as error:
            log.warning("JWKS: key %r left out: %s", data.get("kid"), error)
            continue
        if key.algorithm_name in algorithms:
            keys[key.key_id] = key
    return keys


class JwksSource:
    def __init__(self, spec: JwtSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock
        self.keys: dict[str | None, PyJWK] = {}
        self._document = b""  # the last set read, to tell whether a read changed anything
        self._read_at = -float("inf")      # the last read that succeeded
        self._tried_at = -float("inf")     # the last read tried
        self._reading: asyncio.Future[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._listeners: list[Callable[[], None]] = []
        self.reads = 0  # reads tried (for the tests and the log)

    @property
    def where(self) -> str:
        return self.spec.jwks_url or str(self.spec.jwks_file)

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        """The first read; one that fails is logged, and tokens are refused until a read succeeds."""
        try:
            await self.refresh()
        except JwksError as error:
            log.error("JWKS from %s not read at start (tokens are refused until it is): %s", self.where, error)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def find(self, kid: str | None, alg: str) -> PyJWK | None:
        """The key for a token's header: the one with its kid (a token without a kid: the only key
        bound to its algorithm). None when no key is known, or when the key with that kid is bound
        to another algorithm: a token never chooses how it is checked."""
        if self.clock() - self._read_at > self.spec.jwks_max_age and self._reading is None:
            self._start_reading()
        if kid is None:
            matching = [key for key in self.keys.values() if key.algorithm_name == alg]
            return matching[0] if len(matching) == 1 else None
        key = self.keys.get(kid)
        return key if key is not None and key.algorithm_name == alg else None

    def knows(self, kid: str | None) -> bool:
        return kid in self.keys if kid is not None else bool(self.keys)

    def may_read_again(self) -> bool:
        return self._reading is not None or self.clock() - self._tried_at >= self.spec.jwks_refetch_interval

    async def refresh(self) -> None:
        """Read the set again; callers that come while a read is under way wait for that one."""
        if self._reading is None:
            self._start_reading()
        assert self._reading is not None
        await asyncio.shield(self._reading)

    def _start_reading(self) -> None:
        self._tried_at = self.clock()
        reading = self._reading = asyncio.ensure_future(self._read())
        reading.add_done_callback(self._read_done)

    def _read_done(self, reading: asyncio.Future[None]) -> None:
        self._reading = None
        if not reading.cancelled() and reading.exception() is not None:
            log.warning("JWKS from %s not read: %s", self.where, reading.exception())

    async def _read(self) -> None:
        self.reads += 1
        document = await (self._fetch() if self.spec.jwks_url is not None else self._load_file())
        keys = parse_jwks(document, list(self.spec.algorithms))
        seen = orjson.dumps(document["keys"], option=orjson.OPT_SORT_KEYS)
        changed, self._document = seen != self._document, seen
        self.keys = keys
        self._read_at = self.clock()
        if changed:
            log.info("JWKS from %s: %d key(s) %s", self.where, len(keys), sorted(str(k) for k in keys))
            for listener in self._listeners:
                listener()

    async def _fetch(self) -> Any:
        assert self.spec.jwks_url is not None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.spec.jwks_timeout))
        try:
            async with self._session.get(self.spec.jwks_url, headers={"Accept": "application/json"}) as response:
                if response.status != 200:
                    raise JwksError(f"HTTP {response.status}")
                body = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise JwksError(f"{type(error).__name__}: {error}") from error
        return _json(body)

    async def _load_file(self) -> Any:
        assert self.spec.jwks_file is not None
        try:
            return _json(Path(self.spec.jwks_file).read_bytes())
        except OSError as error:
            raise JwksError(str(error)) from error


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise JwksError(f"not JSON: {error}") from error

