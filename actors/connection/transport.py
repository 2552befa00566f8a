"""Getting a hub socket: the address, SignalR negotiation, the websocket upgrade.

Everything here runs before the connection has tasks of its own, so each
function owns the stream while it runs. After the upgrade, frames are the
session's business (``actors.connection.actor``).

Secrets: the token travels in the ``Authorization`` header of the negotiation
and in the ``access_token`` query parameter of the upgrade. Neither the URL
with its query nor a foreign exception text leaves this module unredacted:
messages name host and path only, and library errors pass through ``redact``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, TypeAlias
from urllib.parse import urlencode, urlsplit

import anyio
import anyio.abc
import msgspec
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, RejectConnection, Request
from wsproto.utilities import ProtocolError as WSProtocolError

from protocols.errors import ConfigError, ConnectionLost
from protocols.secrets import Secret, redact

if TYPE_CHECKING:
    import httpx

Connect: TypeAlias = Callable[[str, int], Awaitable[anyio.abc.ByteStream]]
"""The transport seam: open a byte stream to (host, port)."""

_MAX_UPGRADE_RESPONSE: Final = 64 * 1024
"""Bytes an upgrade answer may take; a peer that never finishes its headers is cut off."""


class Endpoint(msgspec.Struct, frozen=True):
    """A hub URL taken apart: where to connect and what to ask for."""

    tls: bool
    host: str
    port: int
    path: str
    query: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """``http(s)://`` or ``ws(s)://`` host[:port]/path; anything else is a ``ConfigError``."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"hub url {url!r} is invalid: {exc}") from None
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise ConfigError(  # not shown: a value that is no URL may be a misplaced secret
                "hub url must be http(s):// or ws(s)://host/path (the value is not shown)"
            )
        if parts.username or parts.password or parts.fragment:
            raise ConfigError("hub url must not carry credentials or a fragment")
        tls = parts.scheme in ("https", "wss")
        return cls(
            tls=tls,
            host=parts.hostname,
            port=port if port is not None else (443 if tls else 80),
            path=parts.path or "/",
            query=parts.query,
        )

    @property
    def authority(self) -> str:
        """The Host header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    def negotiate_url(self) -> str:
        scheme = "https" if self.tls else "http"
        query = "&".join(filter(None, (self.query, "negotiateVersion=1")))
        return f"{scheme}://{self.authority}{self.path.rstrip('/')}/negotiate?{query}"

    def upgrade_target(self, params: dict[str, str]) -> str:
        """Path and query of the websocket request; secret-bearing, never to be logged."""
        query = "&".join(filter(None, (self.query, urlencode(params))))
        return f"{self.path}?{query}" if query else self.path

    def default_connect(self) -> Connect:
        return functools.partial(anyio.connect_tcp, tls=True) if self.tls else anyio.connect_tcp


# ------------------------------------------------------------------ negotiate


class _Transport(msgspec.Struct, frozen=True, rename="camel"):
    transport: str


class _Negotiation(msgspec.Struct, frozen=True, rename="camel"):
    connection_id: str | None = None
    connection_token: str | None = None
    negotiate_version: int = 0
    available_transports: list[_Transport] = []
    error: str | None = None


_NEGOTIATION: Final = msgspec.json.Decoder(_Negotiation)


class Negotiated(msgspec.Struct, frozen=True):
    """What negotiation gave: the public id and the id to put on the websocket URL."""

    connection_id: str | None
    socket_id: str | None


async def negotiate(client: httpx.AsyncClient, endpoint: Endpoint, token: Secret) -> Negotiated:
    """POST ``{hub}/negotiate?negotiateVersion=1``; raises ``ConnectionLost`` on any refusal."""
    import httpx

    where = f"negotiate at {endpoint.authority}{endpoint.path}"
    headers = {"authorization": f"Bearer {token.reveal()}", "content-length": "0"}
    try:
        response = await client.post(endpoint.negotiate_url(), headers=headers)
    except httpx.HTTPError as exc:
        raise ConnectionLost(
            redact(f"{where} failed: {type(exc).__name__}: {exc}", token)
        ) from None
    if response.status_code != 200:
        raise ConnectionLost(
            f"{where} refused: HTTP {response.status_code}", status=response.status_code
        )
    try:
        answer = _NEGOTIATION.decode(response.content)
    except msgspec.DecodeError:
        raise ConnectionLost(f"{where}: malformed answer") from None
    if answer.error is not None:
        raise ConnectionLost(redact(f"{where} refused: {answer.error}", token))
    transports = {t.transport for t in answer.available_transports}
    if transports and "WebSockets" not in transports:
        raise ConnectionLost(f"{where}: the server offers no WebSockets transport")
    socket_id = answer.connection_token if answer.negotiate_version >= 1 else answer.connection_id
    return Negotiated(answer.connection_id, socket_id)


# -------------------------------------------------------------------- upgrade


async def upgrade(
    stream: anyio.abc.ByteStream, endpoint: Endpoint, target: str, token: Secret
) -> tuple[WSConnection, list[Event]]:
    """The websocket opening handshake over ``stream``.

    Returns the open connection and the events that arrived right behind the
    server's acceptance (frames can share its TCP segment). Raises
    ``ConnectionLost`` for a refusal (with its status), EOF or a bad answer.
    """
    ws = WSConnection(ConnectionType.CLIENT)
    where = f"websocket upgrade at {endpoint.authority}{endpoint.path}"
    try:
        await stream.send(ws.send(Request(host=endpoint.authority, target=target)))
        received = 0
        while True:
            try:
                data = await stream.receive()
            except anyio.EndOfStream:
                raise ConnectionLost(f"{where}: the server closed the connection") from None
            received += len(data)
            if received > _MAX_UPGRADE_RESPONSE:
                raise ConnectionLost(f"{where}: answer exceeds {_MAX_UPGRADE_RESPONSE} bytes")
            ws.receive_data(data)
            events = list(ws.events())
            for i, event in enumerate(events):
                if isinstance(event, AcceptConnection):
                    return ws, events[i + 1 :]
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    raise ConnectionLost(f"{where} refused: HTTP {status}", status=status)
                raise ConnectionLost(f"{where}: unexpected {type(event).__name__}")
    except WSProtocolError as exc:
        raise ConnectionLost(redact(f"{where}: bad answer: {exc}", token)) from None
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
        raise ConnectionLost(
            redact(f"{where} failed: {type(exc).__name__}: {exc}", token)
        ) from None
