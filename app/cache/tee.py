"""Keeping a copy of a streamed answer (unknown length) while the proxy sends it on.

``TeeResponse`` stands in for the backend's ``aiohttp.ClientResponse`` in ``Reply.stream``: the
proxy iterates ``content.iter_chunked`` and calls ``release()`` as it always does; the tee records
the chunks (up to a limit) and, on release, hands the whole body to ``on_complete`` when the
stream was read to its end, else calls ``on_abandon``. The client gets every byte as it comes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any


class TeeResponse:
    def __init__(self, response: Any, limit: int, on_complete: Callable[[bytes], None],
                 on_abandon: Callable[[bool], None]) -> None:
        self._response = response
        self._limit = limit
        self._on_complete = on_complete
        self._on_abandon = on_abandon
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._complete = False
        self._released = False
        self.content = self  # the proxy calls stream.content.iter_chunked(...)

    def _keep(self, chunk: bytes) -> None:
        if self._too_large:
            return
        self._size += len(chunk)
        if self._size > self._limit:
            self._too_large = True
            self._chunks.clear()
        else:
            self._chunks.append(chunk)

    async def iter_chunked(self, size: int) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_chunked(size):
            self._keep(chunk)
            yield chunk
        self._complete = True

    async def read(self) -> bytes:
        body: bytes = await self._response.read()
        self._keep(body)
        self._complete = True
        return body

    async def drain(self) -> bool:
        """Read to the end with nobody to send to (a background fetch); False when it is too large."""
        async for _ in self.iter_chunked(64 * 1024):
            if self._too_large:
                return False
        return True

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._response.release()
        if self._complete and not self._too_large:
            self._on_complete(b"".join(self._chunks))
        else:
            self._on_abandon(self._too_large)
        self._chunks = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)
