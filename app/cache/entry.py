"""A stored response (``CacheEntry``), and its head and body as the entry's hash keeps them.

An entry is one Redis hash (app/cache/protocol.py): ``t`` its times, read by the scripts; ``h`` the
head and ``b`` the body, zlib-compressed when that pays, both opaque to the scripts. Status, headers
and body live and expire together. The head is JSON [status, compressed, age, vary, metadata], a newline, then
the headers as they are sent, names and values joined by NUL bytes: a hit turns that into the
header list with two C calls (HTTP field values never hold NUL, CR or LF; orjson never writes a
newline).
"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.cache.protocol import EntryTimes

RawHeaders = list[tuple[bytes, bytes]]

# Inflating a body this large is done off the event loop.
_INFLATE_IN_THREAD = 256 * 1024


@dataclass(slots=True)
class CacheEntry:
    """One cached response. Times are the store's clock, in seconds since the epoch."""

    key: str
    status: int
    headers: RawHeaders
    body: bytes
    stored_at: float
    fresh_until: float
    stale_until: float
    now: float
    metadata: dict[str, Any] = field(default_factory=dict)
    initial_age: int = 0
    vary: tuple[str, ...] = ()

    @property
    def age(self) -> int:
        """RFC 9111 4.2.3: the age it arrived with plus the time it spent here."""
        return self.initial_age + max(0, int(self.now - self.stored_at))

    @property
    def value(self) -> Any:
        """The body as the value it encodes (JSON), as the seed's ``get`` returns it."""
        return orjson.loads(self.body) if self.body else None


def encode_head(status: int, headers: RawHeaders, compressed: bool, age: int,
                vary: tuple[str, ...], metadata: dict[str, Any] | None) -> bytes:
    info = orjson.dumps([status, 1 if compressed else 0, age, list(vary), metadata or {}])
    return info + b"\n" + b"\0".join(itertools.chain.from_iterable(headers))


def encode_body(body: bytes, min_size: int) -> tuple[bytes, bool]:
    """Compressed when at least ``min_size`` and when it shrinks by a tenth (an image or a gzip
    body would only cost CPU)."""
    if len(body) < min_size or not body:
        return body, False
    packed = zlib.compress(body, 1)
    if len(packed) > len(body) * 0.9:
        return body, False
    return packed, True


def read_head(head: bytes) -> tuple[int, RawHeaders, bool, int, list[str], dict[str, Any]]:
    """status, headers, compressed, the age it arrived with, vary names, metadata."""
    info, _, block = head.partition(b"\n")
    status, compressed, age, vary, metadata = orjson.loads(info)
    parts = iter(block.split(b"\0"))
    return status, list(zip(parts, parts)), compressed, age, vary, metadata


def read_answer(head: bytes, stored_ms: int, now_ms: int) -> tuple[int, RawHeaders, bool, int]:
    """What an answer from the cache needs: status, headers, whether the body is compressed, and
    its Age (RFC 9111 4.2.3: the age it arrived with plus the seconds it spent here, to the nearest).
    The time here counts from the store, which lands after the client was answered: rounded down,
    an answer read back 3 s after it arrived would say 2 (an age understated)."""
    info, _, block = head.partition(b"\n")
    status, compressed, age, _, _ = orjson.loads(info)
    parts = iter(block.split(b"\0"))
    return status, list(zip(parts, parts)), compressed, age + max(0, now_ms - stored_ms + 500) // 1000


async def inflate(body: bytes) -> bytes:
    return await asyncio.to_thread(zlib.decompress, body) if len(body) > _INFLATE_IN_THREAD else zlib.decompress(body)


async def decode_entry(key: str, times: EntryTimes, now_ms: int, head: bytes, body: bytes) -> CacheEntry:
    status, headers, compressed, age, vary, metadata = read_head(head)
    entry = CacheEntry(key=key, status=status, headers=headers, body=body, stored_at=times.stored_ms / 1000,
                       fresh_until=times.fresh_ms / 1000, stale_until=times.stale_ms / 1000, now=now_ms / 1000,
                       metadata=metadata, initial_age=age, vary=tuple(vary))
    if compressed:
        entry.body = await inflate(body)
    return entry
