"""Bodies on the proxy path: the client's request body and the backend's answer, read whole when
they are small (one send, no chunked encoding) and streamed otherwise, never past a limit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from app.pipeline.exchange import Exchange

# Bodies up to this size are read whole: one send instead of a stream, and no chunked encoding.
SMALL_BODY = 64 * 1024


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    """The client disconnected while its request body was being read."""


async def request_body(ex: Exchange, limit: int) -> bytes | AsyncIterator[bytes] | None:
    """What to send the backend: the body whole (small, or already read), a stream of it, or None
    for a request without one. Raises BodyTooLarge past ``limit`` (declared, or counted)."""
    if ex.body is not None:
        if len(ex.body) > limit:
            raise BodyTooLarge
        return ex.body
    declared = ex.header(b"content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length > limit:
            raise BodyTooLarge
        if length == 0:
            return b""
        if 0 < length <= SMALL_BODY:
            return await read_body(ex, limit)
    elif ex.header(b"transfer-encoding") is None:
        return None
    if ex.receive is None:
        return None
    return stream_body(ex, limit)


async def read_body(ex: Exchange, limit: int) -> bytes:
    chunks = [chunk async for chunk in stream_body(ex, limit)]
    return b"".join(chunks)


async def stream_body(ex: Exchange, limit: int) -> AsyncIterator[bytes]:
    assert ex.receive is not None
    seen = 0
    while True:
        message = await ex.receive()
        if message["type"] == "http.disconnect":
            ex.client_gone = True  # for the attempt, which sees only the transport's error
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            # Told to the attempt, which sees only the transport's error when the stream stops.
            ex.body_too_large = True
            raise BodyTooLarge
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def read_response_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """A backend's streamed answer, whole; BodyTooLarge past ``limit``."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
