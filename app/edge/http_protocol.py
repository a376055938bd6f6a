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

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.edge.coalescing import CoalescingTransport


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport: pass the class as uvicorn's ``http``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
