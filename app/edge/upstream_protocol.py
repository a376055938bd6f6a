"""A backend connection that keeps an answer whose body runs past its Content-Length.

aiohttp's parser reads the bytes after a complete answer as the next answer's status line. When
they come in the same read as the answer, it fails on them and the answer it had parsed is lost:
the client would get a 502 for an answer the backend did give. Here the read that failed is parsed
again, cut where the declared length ends, and the answer goes to its request; the connection is
closed (aiohttp closed its transport before reporting the error), so the leftover bytes reach no
later request. nginx does the same ("upstream sent more data than specified in Content-Length").

aiohttp has no public API for a connection's protocol: this subclasses its ``ResponseHandler`` and
sets ``TCPConnector._factory``, pinned by tests/integration/test_misbehaving_origin.py.
"""

from __future__ import annotations

import functools
from typing import Any

import aiohttp
from aiohttp.client_exceptions import ClientPayloadError
from aiohttp.client_proto import ResponseHandler
from aiohttp.http import HttpResponseParser
from aiohttp.http_exceptions import BadStatusLine


class _CutAtDeclaredLength(ResponseHandler):
    # The read being parsed, for the rare answer that must be parsed again (None between reads,
    # so that a pooled connection holds no old bytes).
    _read: bytes | None = None

    def data_received(self, data: bytes) -> None:
        self._read = data
        super().data_received(data)
        self._read = None

    def set_exception(self, exc: BaseException, *cause: Any) -> None:
        # A status line expected after a complete answer: the bytes past its declared length.
        if self._read is not None and cause and isinstance(cause[0], BadStatusLine) and self._deliver_cut(self._read):
            return
        super().set_exception(exc, *cause)

    def _deliver_cut(self, read: bytes) -> bool:
        """Parse ``read`` (an answer from its status line on) up to its declared length and hand
        it to the waiting request; False when it is not such an answer."""
        if self._skip_payload or not read.startswith(b"HTTP/"):
            return False
        body_at = read.find(b"\r\n\r\n") + 4
        if body_at < 4:
            return False
        # The gateway's session never decompresses (upstream.py): bodies are relayed as sent.
        parser = HttpResponseParser(self, self._loop, 2**16, payload_exception=ClientPayloadError,
                                    auto_decompress=False)
        try:
            messages, _, _ = parser.feed_data(read[:body_at])
            if len(messages) != 1:
                return False
            message, payload = messages[0]
            declared = message.headers.get("Content-Length", "")
            if not declared.isdigit() or len(read) <= body_at + int(declared):
                return False
            parser.feed_data(read[body_at:body_at + int(declared)])
        except Exception:
            return False
        self._should_close = True
        # The failed parser is done: closing the connection must not report its unfinished state
        # to the answer delivered here.
        self._parser = None
        self.feed_data((message, payload), 0)
        return True


class BackendConnector(aiohttp.TCPConnector):
    """aiohttp's TCP connector, its connections made with the protocol above."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._factory = functools.partial(_CutAtDeclaredLength, loop=self._loop)
