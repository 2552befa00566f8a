"""An in-memory socket pair: a real ``anyio.abc.ByteStream`` on each end.

It works under trio's MockClock (no file descriptors), honours ``max_bytes``, and
closing one end is EOF for the other, so protocol code runs exactly as on TCP.
"""

from __future__ import annotations

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


class Pipe(anyio.abc.ByteStream):
    """One end of an in-memory socket; ``closed`` tells whether this end was closed."""

    def __init__(
        self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]
    ) -> None:
        self._send, self._receive = send, receive
        self._buffer = b""
        self.closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._buffer:
            self._buffer = await self._receive.receive()
        data, self._buffer = self._buffer[:max_bytes], self._buffer[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        await self._send.send(item)

    async def send_eof(self) -> None:
        self._send.close()

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    def close(self) -> None:
        self.closed = True
        self._send.close()
        self._receive.close()


def socket_pair(capacity: float = 64) -> tuple[Pipe, Pipe]:
    """Two connected ends; each direction buffers up to ``capacity`` writes."""
    a_send, b_receive = anyio.create_memory_object_stream[bytes](capacity)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](capacity)
    return Pipe(a_send, a_receive), Pipe(b_send, b_receive)
