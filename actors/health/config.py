"""Thresholds, bounds and score weights of the health actor, and the input checks they share.

The checks live here because the config is validated with them first; the actor
applies the same ones to every event, so a value the config would refuse is
refused at runtime too.
"""

from __future__ import annotations

from typing import TypeGuard

import msgspec

from protocols.checks import positive
from protocols.errors import ConfigError
from protocols.hubs import FEEDS, HUBS

MAX_NAME_LEN = 200


class ScoreWeights(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Relative weights of the score components; each must be positive.

    Positive weights are what makes "unhealthy" and "score 1" exclusive: every
    condition that makes a hub unhealthy drags its component below 1.
    """

    connectivity: float = 0.3
    readiness: float = 0.2
    breaker: float = 0.2
    freshness: float = 0.2
    latency: float = 0.1


class HealthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds and bounds of the health actor (times in seconds)."""

    stale_after: float = 30.0
    """No market data for longer than this while connected and subscribed: stale feed."""
    contracts: list[str] = msgspec.field(default_factory=list)
    """Contracts expected to be subscribed; any other counts once it produces data."""
    hubs: list[str] = msgspec.field(default_factory=lambda: list(HUBS))
    """Hubs the verdict covers (a market-data-only node watches just ``market``; a node
    consuming NATS watches ``stream``, its source)."""
    report_interval: float = 5.0
    """Seconds between ``CountersReported`` to stats (on Tick)."""
    weights: ScoreWeights = msgspec.field(default_factory=ScoreWeights)
    max_contracts: int = 10_000
    """Contracts tracked by name; the data of others still counts for the feed."""
    rtt_window: int = 64
    """Heartbeat round trips kept per hub for p50/max."""
    rtt_good: float = 0.5
    """A median round trip at or below this scores 1 ..."""
    rtt_bad: float = 5.0
    """... and at or above this 0 (linear in between)."""
    max_reasons: int = 20

    def __post_init__(self) -> None:
        for name in ("stale_after", "report_interval", "rtt_good", "rtt_bad"):
            positive(f"health {name}", getattr(self, name))
        if self.rtt_good >= self.rtt_bad:
            raise ConfigError("health rtt_good must be below rtt_bad")
        for name in ScoreWeights.__struct_fields__:
            positive(f"health weight {name}", getattr(self.weights, name))
        for name, high in (("max_contracts", 10**7), ("rtt_window", 10_000), ("max_reasons", 1000)):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= high:
                raise ConfigError(f"health {name} must be an integer in [1, {high}]")
        hubs = self.hubs
        if not hubs or not all(h in FEEDS for h in hubs) or len(set(hubs)) != len(hubs):
            raise ConfigError(f"health hubs must be distinct names among {FEEDS}, got {hubs!r}")
        if not all(name_ok(c) for c in self.contracts):
            raise ConfigError("health contracts must be non-empty names of <= 200 characters")
        if len(set(self.contracts)) > self.max_contracts:
            raise ConfigError("health contracts exceed max_contracts")


def name_ok(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_LEN
