"""Writes of one event-loop step sent as one: in order, none lost on close (the client connection's
and the Redis pipe's transport)."""

from __future__ import annotations

import asyncio
from typing import Any

from app.edge.coalescing import CoalescingTransport


class RecordingTransport:
    """What reached the socket, one entry per write."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000)}.get(name, default)


async def _next_step() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_headers_and_body_written_in_one_step_leave_as_one_send() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"ok")
    assert raw.sent == []  # nothing before the step ends
    await _next_step()
    assert raw.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]


async def test_a_streamed_answers_headers_leave_when_their_step_ends_not_with_the_body() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await _next_step()
    assert raw.sent == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    transport.write(b"2\r\nhi\r\n")
    transport.writelines([b"0\r\n", b"\r\n"])
    await _next_step()
    assert raw.sent[1:] == [b"2\r\nhi\r\n0\r\n\r\n"]


async def test_close_sends_what_was_written_before_it() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
    transport.close()
    assert raw.sent == [b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n"] and raw.closed
    await _next_step()  # the flush scheduled by the write finds nothing left, writes nothing
    assert len(raw.sent) == 1


async def test_abort_drops_what_was_not_sent_and_a_closed_socket_is_not_written() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"partial")
    transport.abort()
    await _next_step()
    assert raw.sent == [] and raw.aborted
    transport.write(b"late")  # the peer went away meanwhile: the write is dropped, not raised
    await _next_step()
    assert raw.sent == []


async def test_everything_else_is_the_sockets_own() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5000)
    assert transport.is_closing() is False


def test_every_method_of_an_asyncio_transport_is_there_without_a_getattr() -> None:
    """The wrapper forwards asyncio.Transport's interface method by method (no ``__getattr__``,
    which would slow every attribute read on it): none may be missing."""
    public = {name for name in dir(asyncio.Transport) if not name.startswith("_")}
    assert "__getattr__" not in vars(CoalescingTransport)
    assert public <= set(vars(CoalescingTransport)), sorted(public - set(vars(CoalescingTransport)))


async def test_what_is_not_writing_reaches_the_wrapped_transport() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    try:
        raw, _ = await loop.create_connection(asyncio.Protocol, *server.sockets[0].getsockname()[:2])
        transport = CoalescingTransport(raw, loop)  # type: ignore[arg-type]
        assert transport.get_extra_info("peername") == raw.get_extra_info("peername")
        assert transport.is_reading() and transport.can_write_eof()
        transport.pause_reading()
        assert not raw.is_reading()
        transport.resume_reading()
        assert raw.is_reading()
        transport.set_write_buffer_limits(high=1000, low=10)
        assert transport.get_write_buffer_limits() == raw.get_write_buffer_limits() == (10, 1000)
        assert transport.get_write_buffer_size() == 0
        protocol = asyncio.Protocol()
        transport.set_protocol(protocol)
        assert transport.get_protocol() is protocol is raw.get_protocol()
        transport.close()
        assert transport.is_closing()
    finally:
        server.close()
