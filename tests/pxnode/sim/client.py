"""A minimal SignalR hub client for the tests: wsproto + the pxnode codec over any anyio stream.

Deliberately independent of the server's code paths (it shares only the codec),
so a test that passes through it says the wire is right, not that two halves of
one implementation agree with each other.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.abc
import msgspec
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from protocols import signalr
from pxnode.testing import Pipe, socket_pair


def pipe_pair() -> tuple[Pipe, Pipe]:
    return socket_pair(math.inf)  # the sim may write more than a test reads


class HubClient:
    """Speaks websocket + SignalR JSON to one hub; answers websocket pings itself."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.codec = signalr.SignalRConnection(signalr.Role.CLIENT, max_message_size=64 << 20)
        self.status = 0
        self.pongs = 0
        self.messages = 0  # websocket messages received
        self.close_code: int | None = None

    async def open(self, target: str, headers: list[tuple[bytes, bytes]] | None = None) -> int:
        """The upgrade; returns the HTTP status (101 on success)."""
        request = Request(host="127.0.0.1", target=target, extra_headers=headers or [])
        await self.stream.send(self.ws.send(request))
        while not self.status:
            self.ws.receive_data(await self.stream.receive())
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    self.status = 101
                elif isinstance(event, RejectConnection):
                    self.status = event.status_code
        return self.status

    async def handshake(self, protocol: str = "json", version: int = 1) -> Any:
        await self.send(signalr.HandshakeRequest(protocol, version))
        return await self.event()

    async def send(self, event: signalr.Event) -> None:
        await self.send_raw(self.codec.send(event))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send(self.ws.send(TextMessage(data.decode())))

    async def invoke(self, target: str, *arguments: Any, invocation_id: str | None = None) -> None:
        await self.send(signalr.Invocation(target, arguments, invocation_id))

    async def ping(self) -> None:
        await self.stream.send(self.ws.send(Ping(b"hi")))

    async def event(self) -> Any:
        """The next SignalR event, or ``signalr.CLOSED``."""
        while True:
            event = self.codec.next_event()
            if event is not signalr.NEED_DATA:
                return event
            try:
                data = await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.codec.receive_data(b"")
                continue
            self.ws.receive_data(data)
            for ws_event in self.ws.events():
                if isinstance(ws_event, TextMessage):
                    self.messages += 1
                    self.codec.receive_data(ws_event.data.encode())
                elif isinstance(ws_event, Ping):
                    await self.stream.send(self.ws.send(ws_event.response()))
                elif isinstance(ws_event, Pong):
                    self.pongs += 1
                elif isinstance(ws_event, CloseConnection):
                    self.close_code = ws_event.code
                    if self.ws.state.name == "REMOTE_CLOSING":
                        await self.stream.send(self.ws.send(ws_event.response()))
                    self.codec.receive_data(b"")

    async def closed(self) -> int | None:
        """Read until the websocket closes; its close code (None: dropped without one)."""
        while self.close_code is None:
            try:
                data = await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return None
            self.ws.receive_data(data)
            for ws_event in self.ws.events():
                if isinstance(ws_event, CloseConnection):
                    self.close_code = ws_event.code
                    if self.ws.state.name == "REMOTE_CLOSING":
                        await self.stream.send(self.ws.send(ws_event.response()))
        return self.close_code

    async def invocation(self, target: str) -> signalr.Invocation:
        """Skip to the next invocation of ``target`` (pings and other targets pass by)."""
        while True:
            event = await self.event()
            assert event is not signalr.CLOSED, f"closed while waiting for {target}"
            if isinstance(event, signalr.Invocation) and event.target == target:
                return event


def decode(kind: Any, raw: msgspec.Raw) -> Any:
    return msgspec.json.decode(raw, type=kind, strict=True)
