"""Opening a session's socket: token, negotiation, dial, upgrade, SignalR handshake.

All of it runs before the session has tasks of its own, so each step owns the
stream while it runs. Every step may be cancelled at any await (the actor
abandons a connect the moment it is told to stop): the httpx client closes by
its context, the stream by the handler that closes it on any exception, and
nothing here logs, so a cancel leaves nothing open and no token anywhere.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Final

import anyio
import anyio.abc
from wsproto import WSConnection
from wsproto.events import CloseConnection, Event
from wsproto.events import Ping as WsPing

from protocols.errors import AskTimeout, ConnectionLost, ProtocolError
from protocols.interfaces import ActorContext
from protocols.messages import AuthFailureReported, GetToken, TokenIssued
from protocols.secrets import Secret, redact
from protocols.signalr import HandshakeRequest, HandshakeResponse, Role, SignalRConnection

from .config import HubConfig
from .link import STREAM_ERRORS, Link, take, text_frame
from .transport import Connect, Endpoint, negotiate, upgrade

if TYPE_CHECKING:
    import httpx

MAX_REASON: Final = 200
"""Characters of a server-given reason that make it into a message."""


class Opener:
    """Opens links to one hub; failures are ``ConnectionLost`` with a token-free text."""

    def __init__(
        self,
        config: HubConfig,
        endpoint: Endpoint,
        connect: Connect,
        http: httpx.AsyncBaseTransport | None,
        counters: Counter[str],
    ) -> None:
        self._config = config
        self._endpoint = endpoint
        self._connect = connect
        self._http = http
        self._counters = counters
        self.where = f"{config.hub} hub at {endpoint.authority}{endpoint.path}"

    async def open(self, ctx: ActorContext) -> Link:
        """A token from auth, then a socket that completed the SignalR handshake."""
        link = await self._open(await self._token(ctx))
        link.data_at = ctx.wall_time()  # the feed is silent from the opening until it speaks
        return link

    async def _token(self, ctx: ActorContext) -> Secret:
        try:
            reply = await ctx.ref("auth").ask(GetToken(), self._config.connect_timeout)
        except AskTimeout as exc:
            raise ConnectionLost(f"{self.where}: no token: {exc}") from None
        if isinstance(reply, TokenIssued) and isinstance(reply.token, Secret):
            return reply.token
        why = reply.reason if isinstance(reply, AuthFailureReported) else type(reply).__name__
        raise ConnectionLost(f"{self.where}: no token: {why}")

    async def _open(self, token: Secret) -> Link:
        """Negotiate, connect, upgrade and shake hands; the stream is closed on any failure."""
        import httpx

        config, endpoint = self._config, self._endpoint
        params = {"access_token": token.reveal()}
        connection_id = None
        try:
            with anyio.fail_after(config.connect_timeout):
                if not config.skip_negotiation:
                    async with httpx.AsyncClient(transport=self._http) as client:
                        negotiated = await negotiate(client, endpoint, token)
                    connection_id = negotiated.connection_id
                    if negotiated.socket_id:
                        params = {"id": negotiated.socket_id, **params}
                stream = await self._connect(endpoint.host, endpoint.port)
        except TimeoutError:
            raise ConnectionLost(f"{self.where}: connect timed out") from None
        except STREAM_ERRORS as exc:
            detail = redact(f"{type(exc).__name__}: {exc}", token)
            raise ConnectionLost(f"{self.where}: connect failed: {detail}") from None
        try:
            with anyio.fail_after(config.handshake_timeout):
                target = endpoint.upgrade_target(params)
                ws, events = await upgrade(stream, endpoint, target, token)
                codec = SignalRConnection(Role.CLIENT, max_message_size=config.max_message_size)
                await stream.send(text_frame(ws, codec, HandshakeRequest()))
                await self._handshake(stream, ws, codec, events)
        except TimeoutError:
            await anyio.aclose_forcefully(stream)
            raise ConnectionLost(f"{self.where}: handshake timed out") from None
        except STREAM_ERRORS as exc:
            await anyio.aclose_forcefully(stream)
            detail = redact(f"{type(exc).__name__}: {exc}", token)
            raise ConnectionLost(f"{self.where}: handshake failed: {detail}") from None
        except BaseException:  # a refusal, or the cancel of a stop
            await anyio.aclose_forcefully(stream)
            raise
        self._counters["connects"] += 1
        return Link(stream, ws, codec, token, connection_id)

    async def _handshake(
        self,
        stream: anyio.abc.ByteStream,
        ws: WSConnection,
        codec: SignalRConnection,
        events: list[Event],
    ) -> None:
        """Read until the SignalR handshake answer; later messages stay queued in the codec."""
        while True:
            for control in take(codec, events, self._counters):
                if isinstance(control, CloseConnection):
                    raise ConnectionLost(
                        f"{self.where}: websocket closed during the handshake ({control.code})"
                    )
                if isinstance(control, WsPing):
                    await stream.send(ws.send(control.response()))
            try:
                answer = codec.next_event()
            except ProtocolError as exc:
                raise ConnectionLost(f"{self.where}: SignalR handshake failed: {exc}") from None
            if isinstance(answer, HandshakeResponse):
                if answer.error is not None:
                    refusal = answer.error[:MAX_REASON]
                    raise ConnectionLost(f"{self.where}: SignalR handshake refused: {refusal}")
                return
            try:
                data = await stream.receive()
            except anyio.EndOfStream:
                raise ConnectionLost(f"{self.where}: EOF during the SignalR handshake") from None
            ws.receive_data(data)
            events = list(ws.events())
