"""Raw sockets on both sides of a gateway: a client that sends exactly the bytes a test writes, and a
backend that keeps exactly the bytes it receives, so a test can say what crossed the gateway."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.support import ThreadServer


@dataclass
class Received:
    """One request as the backend read it off the wire."""

    head: bytes  # request line and header lines, without the blank line
    body: bytes  # as framed on the wire (chunked stays chunked)

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def target(self) -> bytes:
        return self.request_line.split(b" ")[1]

    def headers(self) -> list[tuple[bytes, bytes]]:
        lines = self.head.split(b"\r\n")[1:]
        return [(name.strip().lower(), value.strip()) for name, _, value in (line.partition(b":") for line in lines)]

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers() if n == name]


class RawBackend(ThreadServer):
    """An HTTP/1.1 backend on asyncio streams that records every request's raw bytes and answers
    ``200 {"n": <request number>}``. It frames requests itself (Content-Length or chunked), so what
    it records is what a strict backend would have taken as one request."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.raw = bytearray()  # every byte, from every connection, in arrival order
        self._lock = threading.Lock()
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> RawBackend:
        self.thread.start()
        self._server = self.run(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = await self._read_body(reader, head)
                with self._lock:
                    self.raw += head + body
                    self.received.append(Received(head[:-4], body))
                    number = len(self.received)
                payload = orjson.dumps({"n": number})
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(payload), payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
        fields = Received(head[:-4], b"")
        if fields.header(b"transfer-encoding"):
            body = bytearray()
            while True:
                size_line = await reader.readuntil(b"\r\n")
                body += size_line
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    body += await reader.readuntil(b"\r\n")  # no trailers from the gateway
                    return bytes(body)
                body += await reader.readexactly(size + 2)
        length = fields.header(b"content-length")
        return await reader.readexactly(int(length[0])) if length else b""

    def stop(self) -> None:
        server = self._server
        if server is not None:
            async def stop_serving() -> None:  # on the server's own loop: close() is not thread-safe
                server.close()

            self.run(stop_serving())
        super().stop()

    def __enter__(self) -> RawBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    raw: bytes = field(repr=False, default=b"")

    def json(self) -> Any:
        return orjson.loads(self.body)


class RawClient:
    """One client connection that writes bytes as given and reads answers as they come."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> RawClient:
        self.sock.sendall(data)
        return self

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def answer(self) -> Answer:
        """The next whole answer (Content-Length framed, as the gateway's own answers are; a 1xx
        has no body); AssertionError if the connection closes first."""
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed before an answer: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.split(b"\r\n")
        status = int(status_line.split(b" ")[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if status < 200 else int(headers.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            assert self._fill(), "connection closed inside an answer's body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(status, headers, body, head + b"\r\n\r\n" + body)

    def closed(self, within: float = 5.0) -> bool:
        """True when the gateway closes the connection within ``within`` seconds (bytes it sends
        meanwhile are kept in the buffer)."""
        deadline = time.monotonic() + within
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self._fill():
                    return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ask(port: int, data: bytes, timeout: float = 5.0) -> Answer:
    """Send ``data`` on a new connection and read one answer."""
    with RawClient(port, timeout) as client:
        return client.send(data).answer()
