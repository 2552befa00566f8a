"""One hub connection on its websocket: a reader, a writer and the bounded outbox between.

Theory of operation
-------------------
The reader feeds websocket messages to the connection's ``HubSession`` and queues
its replies; the writer drains the outbox onto the socket. Only the writer writes
the socket, so frames never interleave. The outbox is bounded: a connection that
cannot keep up is dropped and counted, as a real server drops a slow consumer
rather than buffer without end.

The gateway's ``stall`` and ``slow`` faults hold every writer back; ``Pace`` is that
one shared brake, owned by the gateway and handed to each writer.

Invariant: ``scope`` cancelled means the socket is abandoned without a close
handshake; ``closing`` means a close (ours or the client's) is under way and
nothing but its frames may still be queued.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Final, TypeAlias

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping, Pong, TextMessage

from pxnode.sim.hubs import HubSession

OUTBOX: Final = 1024  # queued websocket messages per connection before it counts as too slow
CHUNK: Final = 256 * 1024  # largest websocket message built by coalescing frames
SLOW_PAUSE: Final = 0.1  # pause after each write while a ``slow`` fault lasts
CLOSE_WAIT: Final = 2.0  # how long a server-initiated close waits for the client's reply

Outgoing: TypeAlias = bytes | Pong | CloseConnection  # bytes: SignalR frames


class Pace:
    """Until when the hubs are stalled (silent) or slow; times on anyio's clock."""

    __slots__ = ("slow_until", "stalled_until")

    def __init__(self) -> None:
        self.stalled_until = self.slow_until = float("-inf")

    def stall(self, seconds: float) -> None:
        self.stalled_until = max(self.stalled_until, anyio.current_time() + seconds)

    def slow(self, seconds: float) -> None:
        self.slow_until = max(self.slow_until, anyio.current_time() + seconds)

    async def wait(self) -> None:
        """Hold a write back while a stall lasts, and pause after it while slow."""
        wait = self.stalled_until - anyio.current_time()
        if wait > 0:
            await anyio.sleep(wait)
            await self.wait()  # the stall may have been extended meanwhile
            return
        if anyio.current_time() < self.slow_until:
            await anyio.sleep(SLOW_PAUSE)


class HubConn:
    """Server-side state of one hub connection; ``counters`` is the gateway's."""

    __slots__ = (
        "closing",
        "counters",
        "last_read",
        "last_write",
        "logged_out",
        "outbox",
        "peer_closed",
        "scope",
        "session",
        "ws",
    )

    def __init__(
        self,
        session: HubSession,
        ws: WSConnection,
        outbox: MemoryObjectSendStream[Outgoing],
        scope: anyio.CancelScope,
        counters: Counter[str],
    ) -> None:
        self.session, self.ws, self.outbox, self.scope = session, ws, outbox, scope
        self.counters = counters
        self.last_read = self.last_write = anyio.current_time()
        self.closing = False
        self.logged_out = False  # after GatewayLogout: no more data on this socket
        self.peer_closed = anyio.Event()

    async def read(self, stream: anyio.abc.ByteStream, data: bytes) -> None:
        ws = self.ws
        while True:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Message):
                    self.last_read = anyio.current_time()
                    raw = event.data.encode() if isinstance(event, TextMessage) else event.data
                    if not raw:
                        continue  # an empty frame carries nothing; b"" would mean the client left
                    reply = self.session.receive(bytes(raw))
                    if reply:
                        self.enqueue(reply)
                    if self.session.done:
                        self.close()
                elif isinstance(event, Ping):
                    self.last_read = anyio.current_time()
                    self.enqueue(event.response())
                elif isinstance(event, CloseConnection):
                    if ws.state is ConnectionState.REMOTE_CLOSING:
                        self.closing = True
                        self.enqueue(event.response())
                    else:
                        self.peer_closed.set()
                    return
            try:
                data = await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                self.scope.cancel()
                return

    async def write(
        self,
        stream: anyio.abc.ByteStream,
        outbox: MemoryObjectReceiveStream[Outgoing],
        pace: Pace,
    ) -> None:
        backlog: deque[Outgoing] = deque()
        while True:
            item = backlog.popleft() if backlog else await outbox.receive()
            ours = False  # does this item start a close handshake?
            if isinstance(item, bytes):
                # Coalesce queued frames into one message: fewer syscalls, same records.
                parts, size = [item], len(item)
                while size < CHUNK and not backlog:
                    try:
                        more = outbox.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    if not isinstance(more, bytes):
                        backlog.append(more)
                        break
                    parts.append(more)
                    size += len(more)
                if self.ws.state is not ConnectionState.OPEN:
                    continue
                data = self.ws.send(TextMessage(b"".join(parts).decode()))
            elif self.ws.state is ConnectionState.OPEN or (
                # once the client has closed, only our answering close may still go out
                isinstance(item, CloseConnection)
                and self.ws.state is ConnectionState.REMOTE_CLOSING
            ):
                ours = self.ws.state is ConnectionState.OPEN
                data = self.ws.send(item)
            else:
                continue
            await pace.wait()
            try:
                await stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # The client is gone (it may have closed while a stall held this
                # write back). Raised here, the error would leave ``_run_hub`` in
                # an exception group that ``handle`` cannot catch, and bring down
                # the listener's task group: the whole gateway.
                self.counters["connections_broken"] += 1
                self.scope.cancel()
                return
            if isinstance(item, bytes):
                # Only SignalR traffic counts: a websocket pong is not a SignalR
                # message, and a client pinging every 15 s must still get our pings.
                self.last_write = anyio.current_time()
            if isinstance(item, CloseConnection):
                if ours:
                    with anyio.move_on_after(CLOSE_WAIT):
                        await self.peer_closed.wait()
                self.scope.cancel()
                return

    def enqueue(self, item: Outgoing) -> None:
        try:
            self.outbox.send_nowait(item)
        except anyio.WouldBlock:
            if not self.scope.cancel_called:
                self.counters["dropped_slow"] += 1
                self.scope.cancel()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def close(self, error: str | None = None, *, allow_reconnect: bool = False) -> None:
        """Close politely: SignalR Close, then the websocket close."""
        if self.closing:
            return
        self.closing = True
        frame = self.session.close(error, allow_reconnect=allow_reconnect)
        if frame:
            self.enqueue(frame)
        self.enqueue(CloseConnection(code=1000))
