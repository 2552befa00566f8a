"""Where the stream goes and how much the bridge may hold while NATS is away."""

from __future__ import annotations

from typing import Literal

import msgspec

from protocols.checks import count, non_negative, positive
from protocols.errors import ConfigError


class NatsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The NATS JetStream side of a node: publishing (``NodeConfig.nats``) or consuming
    (``NodeConfig.consume``) the validated stream."""

    url: str = "nats://127.0.0.1:4222"
    stream: str = "PXNODE"
    """JetStream stream name; created at start if missing, checked if present."""
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    max_age: float = 7 * 86_400.0
    """Seconds a message is kept (0: for ever)."""
    duplicate_window: float = 120.0
    """Seconds JetStream remembers message ids: a re-publish within it is dropped."""
    buffer: int = 65_536
    """Batches the bridge's mailbox holds while NATS is slow or down."""
    overflow: Literal["block", "drop_oldest", "drop_newest"] = "block"
    """What a full buffer does: ``block`` holds the node back (nothing published is
    ever lost); the drop policies keep the node at full speed and count the gap."""
    window: int = 2_000
    """Publishes in flight before the bridge waits for their acks."""
    ack_timeout: float = 10.0
    connect_timeout: float = 5.0
    durable: str = "pxnode"
    """Name of the durable consumer ``consume`` resumes from."""
    fetch: int = 1_000
    """Messages a consumer asks for at once."""
    subjects: list[str] = msgspec.field(default_factory=lambda: ["px.>"])
    """Subjects the stream holds (created with these)."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ConfigError(f"nats url must start with nats://, tls:// or ws(s)://: {self.url!r}")
        if not self.stream or any(c in self.stream for c in " .*>/\\"):
            raise ConfigError(f"nats stream name {self.stream!r} may not hold spaces, . * > / \\")
        if not self.durable or any(c in self.durable for c in " .*>/\\"):
            raise ConfigError(f"nats durable name {self.durable!r} may not hold spaces, . * > / \\")
        for name in ("buffer", "window", "fetch"):
            count(f"nats {name}", getattr(self, name))
        for name in ("max_age", "duplicate_window"):
            non_negative(f"nats {name}", getattr(self, name))
        for name in ("ack_timeout", "connect_timeout"):
            positive(f"nats {name}", getattr(self, name))
