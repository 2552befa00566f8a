"""Bounds and windows of the stats actor, and the memory budget of the bar rings."""

from __future__ import annotations

import msgspec

from protocols.checks import count, positive
from protocols.errors import ConfigError

from .windows import LogScale

_MAX_RATE_BUCKETS = 3_600  # per counter
_MAX_BUCKETS = 20_000  # per latency window

BAR_BYTES = 320
"""Memory of one bar in a ring, with margin (a ``Bar`` in a deque measured ~284 B)."""


class StatsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Bounds and windows of the stats actor (times in seconds)."""

    rate_window: float = 10.0
    rate_bucket: float = 1.0
    latency_window: float = 60.0
    latency_error: float = 0.01
    """Relative error of p50/p99 for latencies within [latency_min, latency_max]."""
    latency_min: float = 1e-6
    latency_max: float = 1e4
    source_ttl: float = 60.0
    max_sources: int = 256
    max_keys: int = 4096
    """Counters plus gauges over all sources."""
    max_latency_keys: int = 64
    """Each latency series holds two windows of ~1,150 8-byte counts (18 KiB) at the defaults."""
    max_samples_per_report: int = 10_000
    max_mailboxes: int = 512
    max_children: int = 512
    max_name_len: int = 200

    def __post_init__(self) -> None:
        for field in ("rate_window", "rate_bucket", "latency_window", "source_ttl"):
            positive(f"stats {field}", getattr(self, field))
        ratio = self.rate_window / self.rate_bucket
        if not (ratio >= 1 and ratio.is_integer()):
            raise ConfigError("stats rate_bucket must divide rate_window")
        if ratio > _MAX_RATE_BUCKETS:
            raise ConfigError(f"stats rate_window needs more than {_MAX_RATE_BUCKETS} buckets")
        if positive("stats latency_error", self.latency_error) >= 1:
            raise ConfigError(f"stats latency_error must be below 1, got {self.latency_error!r}")
        if positive("stats latency_min", self.latency_min) >= positive(
            "stats latency_max", self.latency_max
        ):
            raise ConfigError("stats latency_min must be below latency_max")
        if LogScale(self.latency_error, self.latency_min, self.latency_max).size > _MAX_BUCKETS:
            raise ConfigError(f"stats latency range needs more than {_MAX_BUCKETS} buckets")
        for field in (
            "max_sources",
            "max_keys",
            "max_latency_keys",
            "max_samples_per_report",
            "max_mailboxes",
            "max_children",
            "max_name_len",
        ):
            count(f"stats {field}", getattr(self, field))


def dynamic_limits(
    available_bytes: int,
    contracts: int,
    timeframes: int,
    *,
    cap_ring: int,
    bytes_per_bar: int = BAR_BYTES,
    budget_fraction: float = 0.25,
    floor: int = 2,
) -> int:
    """Bars to keep per (contract, timeframe) ring.

    All rings together take at most ``budget_fraction`` of the memory that is
    available now (``psutil.virtual_memory().available``, passed in so this stays
    pure), and never more than ``cap_ring`` bars each. ``floor`` wins over the
    budget: a ring needs the forming bar and the last closed one to work at all.
    """
    for name, value in (("contracts", contracts), ("timeframes", timeframes), ("floor", floor)):
        count(name, value)
    count("cap_ring", cap_ring, minimum=floor)
    count("bytes_per_bar", bytes_per_bar)
    count("available_bytes", available_bytes, minimum=0)
    if positive("budget_fraction", budget_fraction) > 1:
        raise ConfigError(f"budget_fraction must be at most 1, got {budget_fraction!r}")
    per_ring = int(available_bytes * budget_fraction) // (contracts * timeframes * bytes_per_bar)
    return max(floor, min(cap_ring, per_ring))
