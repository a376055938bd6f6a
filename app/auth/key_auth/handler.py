"""API keys: read from the request where ``auth.api_key`` says, checked against the keys every
replica mirrors in memory (``rate_limiter.api_keys`` and those added through the admin API), so a
check costs no store round trip.

Whatever is wrong with a key (unknown, revoked, empty, too long, not text) gives the same
``INVALID``: the answer must not tell a guesser which.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from urllib.parse import unquote_to_bytes

from app.auth.consumer import Consumer, Verdict
from app.auth.key_auth.schema import ApiKeyLocation
from app.pipeline.exchange import Exchange
from app.ratelimit.identity import KeyOwner, hash_api_key

# Longer than any key the gateway makes or accepts in its config: not worth hashing.
_MAX_KEY = 1024
# Consumers made from keys, per key digest, until the keys change (a client sends the same key
# with every request; the consumer's header values are made once).
_MAX_CONSUMERS = 10_000


@lru_cache(maxsize=4096)
def key_digest(key: bytes) -> str:
    return hash_api_key(key.decode("latin-1").strip())


def query_value(query: bytes, name: bytes) -> bytes | None:
    """The first value of ``name`` in a query string, percent-decoded."""
    if name not in query:
        return None
    prefix = name + b"="
    for part in query.split(b"&"):
        if part.startswith(prefix):
            return unquote_to_bytes(part[len(prefix):].replace(b"+", b" "))
    return None


def without_parameter(query: bytes, name: bytes) -> bytes:
    prefix = name + b"="
    return b"&".join(part for part in query.split(b"&") if part and not part.startswith(prefix) and part != name)


class KeyAuth:
    method = "api_key"

    def __init__(self, location: ApiKeyLocation, owner_of: Callable[[str], KeyOwner | None]) -> None:
        self.header = location.header.lower().encode() if location.header else None
        self.query = location.query.encode() if location.query else None
        self.owner_of = owner_of
        self._consumers: dict[str, Consumer] = {}
        where = f'header="{location.header}"' if location.header else f'query="{location.query}"'
        self.challenge = f'ApiKey realm="apigw", {where}'.encode()

    def forget(self) -> None:
        """The keys changed (one added, one revoked): consumers are made again from the mirror."""
        self._consumers.clear()

    def credential(self, ex: Exchange) -> bytes | None:
        key = ex.header(self.header) if self.header is not None else None
        if key is None and self.query is not None and ex.query_string:
            key = query_value(ex.query_string, self.query)
        return key

    def authenticate(self, ex: Exchange) -> Consumer | Verdict:
        key = self.credential(ex)
        if key is None:
            return Verdict.ABSENT
        if not key or len(key) > _MAX_KEY:
            return Verdict.INVALID
        digest = key_digest(key)
        consumer = self._consumers.get(digest)
        if consumer is None:
            owner = self.owner_of(digest)
            if owner is None:
                return Verdict.INVALID
            consumer = Consumer(owner.client_id, owner.tier, frozenset(owner.roles), self.method)
            if len(self._consumers) >= _MAX_CONSUMERS:
                self._consumers.clear()
            self._consumers[digest] = consumer
        return consumer
