"""One open hub socket and the state that lives and dies with it."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Final

import anyio
import anyio.abc
from wsproto import WSConnection
from wsproto.events import BytesMessage, Event, TextMessage

from protocols.errors import ConnectionLost
from protocols.secrets import Secret
from protocols.signalr import Event as CodecEvent
from protocols.signalr import SignalRConnection

OUTBOX: Final = 256
"""Frames queued for the writer."""

STREAM_ERRORS: Final = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
"""What a stream raises when the socket under it is gone."""


class Link:
    """One open socket and everything that lives and dies with it."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        ws: WSConnection,
        codec: SignalRConnection,
        token: Secret,
        connection_id: str | None,
    ) -> None:
        self.stream = stream
        self.ws = ws
        self.codec = codec
        self.token = token
        self.connection_id = connection_id
        self.outbox, self.outgoing = anyio.create_memory_object_stream[bytes](OUTBOX)
        self.scope = anyio.CancelScope()  # replaced by the session's task group scope
        self.lost: ConnectionLost | None = None
        self.closing = False  # our Close went out: nothing read after it is forwarded
        self.closed = anyio.Event()  # the server answered our close (or the stream ended)
        self.subscribed = False  # the book's calls are in the outbox
        self.heard_at = anyio.current_time()  # when we last handled a message from the server
        self.data_at = 0.0  # wall time of the last hub event forwarded, or of the opening
        self.ids = itertools.count(1)
        self.pending: dict[str, str] = {}  # invocation id -> target, until its Completion
        self.ping: tuple[bytes, float] | None = None  # websocket ping in flight, sent at

    def text(self, event: CodecEvent) -> bytes:
        return text_frame(self.ws, self.codec, event)

    def fail(self, reason: str) -> None:
        """End the session as failed (the first reason wins).

        While we are closing, any ending is the one we asked for: the close is done.
        """
        if self.closing:
            self.closed.set()
            return
        if self.lost is None:
            self.lost = ConnectionLost(reason)
        self.scope.cancel()


def text_frame(ws: WSConnection, codec: SignalRConnection, event: CodecEvent) -> bytes:
    """The websocket frame carrying one SignalR message."""
    return ws.send(TextMessage(data=codec.send(event).decode()))


def take(codec: SignalRConnection, events: list[Event], counters: Counter[str]) -> list[Event]:
    """Feed text frames to the codec; the control events are the caller's."""
    controls = []
    for event in events:
        if isinstance(event, TextMessage):
            if event.data:  # an empty frame carries no record, and b"" would tell the codec EOF
                codec.receive_data(event.data.encode())
        elif isinstance(event, BytesMessage):
            counters["bad.binary"] += 1  # the JSON protocol speaks text only
        else:
            controls.append(event)
    return controls
