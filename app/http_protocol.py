"""The client side's HTTP/1.1 protocol: uvicorn's httptools one, with one write per answer.

uvicorn writes an answer's status line and headers when the app sends ``http.response.start`` and
its body when the app sends ``http.response.body``: two writes, so two ``send()`` system calls and
two packets for every small answer. On loopback a send also runs the receiving side's TCP work, and
the two were the largest single cost of a proxied request (a fifth of the gateway's CPU in a
profile). Here the client connection's writes made in one step of the event loop go out as one
``send()`` at the end of that step: headers and body together, as nginx sends them. A streamed
answer's headers still leave as soon as the step that made them ends, never waiting for its body.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes are gathered during one loop step and sent together after it.

    Everything but writing and closing is the wrapped transport's own (``__getattr__``)."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            pending.append(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        # What was written before close() still goes out first (an answer, then "connection: close").
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport: pass the class as uvicorn's ``http``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
