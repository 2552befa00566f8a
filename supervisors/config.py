"""Node configuration: one msgspec Struct tree, every field documented.

Actor-specific sections reuse the actor's own config Struct, so a threshold is
defined (and validated) in exactly one place.
"""

from __future__ import annotations

import msgspec

from actors.health import HealthConfig
from actors.stats import StatsConfig
from actors.validation import ValidationConfig
from protocols.errors import ConfigError
from protocols.timeframes import parse_timeframe


class BarsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    timeframes: list[str] = msgspec.field(default_factory=lambda: ["1min", "5min", "1hr", "4hr"])
    """Timeframes built for every contract (DESIGN §5 names)."""
    ring_size: int = 1000
    """Closed bars kept per contract x timeframe (the bound on bar memory)."""
    grace: float = 0.0
    """Seconds after a bar's end before its timer closes it."""

    def __post_init__(self) -> None:
        for name in self.timeframes:
            parse_timeframe(name)


class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    contracts: list[str] = msgspec.field(default_factory=list)
    """Contract ids to subscribe (CON.F.US.MNQ.Z25, ...)."""
    bars: BarsConfig = msgspec.field(default_factory=BarsConfig)
    validation: ValidationConfig = msgspec.field(default_factory=ValidationConfig)
    stats: StatsConfig = msgspec.field(default_factory=StatsConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    """Stale-feed threshold and score weights; its ``contracts`` default to ``contracts``."""
    tick_interval: float = 0.25
    """Seconds between clock ticks (bar timers, stats sampling); 0 = no clock (replay)."""
    mailbox_capacity: int = 4096
    """Capacity of the data-path mailboxes (validation, bars)."""
    seed: int = 0
    """Seed of the node's random number generator (backoff and breaker jitter)."""

    def health_config(self) -> HealthConfig:
        if self.health.contracts:
            return self.health
        return msgspec.structs.replace(self.health, contracts=list(self.contracts))

    def __post_init__(self) -> None:
        if self.tick_interval < 0:
            raise ConfigError(f"tick_interval must be >= 0, got {self.tick_interval}")
        if self.mailbox_capacity < 1:
            raise ConfigError(f"mailbox_capacity must be >= 1, got {self.mailbox_capacity}")
