"""The configuration of one hub connection: its address and its timings."""

from __future__ import annotations

import msgspec

from protocols.checks import positive
from protocols.errors import ConfigError
from protocols.hubs import HubName

from .transport import Endpoint


class HubTimings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How long a hub connection waits for what (seconds), the same for both hubs.

    ``server_timeout``: no SignalR message from the server for this long means
    the socket is dead even if TCP says otherwise (the silent freeze).
    ``connect_timeout`` bounds the token ask, negotiation and TCP connect;
    ``handshake_timeout`` the websocket upgrade plus the SignalR handshake;
    ``close_timeout`` how long a clean close waits for the server's answer.
    """

    keepalive_interval: float = 15.0
    server_timeout: float = 30.0
    handshake_timeout: float = 15.0
    connect_timeout: float = 10.0
    close_timeout: float = 2.0
    max_message_size: int = 1 << 20
    report_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "keepalive_interval",
            "server_timeout",
            "handshake_timeout",
            "connect_timeout",
            "close_timeout",
            "report_interval",
        ):
            positive(f"hub {name}", getattr(self, name))
        if not 1024 <= self.max_message_size <= 1 << 30:
            raise ConfigError("hub max_message_size must be in 1 KiB..1 GiB")


class HubConfig(HubTimings, frozen=True, kw_only=True):
    """One hub's address, how to reach it, and its timings."""

    hub: HubName
    url: str
    skip_negotiation: bool = True

    def __post_init__(self) -> None:
        if self.hub not in ("market", "user"):
            raise ConfigError(f"hub must be 'market' or 'user', got {self.hub!r}")
        Endpoint.parse(self.url)
        super().__post_init__()
