"""The thresholds of the validation rules and the names of the reasons they count."""

from __future__ import annotations

import msgspec

from protocols.checks import at_most, count, non_negative
from protocols.timestamps import MAX_AGE_S, MAX_FUTURE_S

# Rule order per kind (the first failing rule names the reason); "malformed" is a non-object item.
_TIME_RULES = ("timestamp", "future", "too_old", "stale")
TRADE_REASONS = ("price", "volume", *_TIME_RULES, "spike", "malformed")
QUOTE_REASONS = ("price", "volume", "crossed", *_TIME_RULES, "malformed")
DEPTH_REASONS = ("price", "volume", "type", *_TIME_RULES, "malformed")


DAY = 86_400.0


class ValidationConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds of the validation rules (docs/rules.md); every limit is inclusive."""

    max_future: float = 5.0
    """Seconds a timestamp may lie after the receive time (exchange/host clock skew)."""
    max_age: float = 86_400.0
    """Seconds a timestamp may lie before the receive time (older is a replayed or stuck feed)."""
    stale_after: float = 60.0
    """Seconds an item may be older than the newest accepted one of its contract."""
    max_spike: float = 0.5
    """Largest relative move from the last accepted trade price (0.5 = 50 %)."""
    max_contracts: int = 10_000
    """Most contracts validation keeps state for (a replay of any tape); a frame of one
    more is counted ``frames_over_contract_cap`` and dropped. A live node keeps state
    only for the contracts it subscribed and counts others ``frames_unsubscribed``."""
    batch_limit: int = 1024
    """Most messages drained from the inbox per batch (one Trades/Quotes/DepthsAccepted each)."""
    report_every: int = 100
    """Batches between two counter reports to ``stats`` (Tick and Stop report too)."""

    def __post_init__(self) -> None:
        for name in ("max_future", "max_age", "stale_after", "max_spike"):
            non_negative(f"validation.{name}", getattr(self, name))
        for name, limit in (("max_future", MAX_FUTURE_S), ("max_age", MAX_AGE_S)):
            at_most(f"validation.{name}", getattr(self, name), limit, "times are µs integers")
        # The shortest bar frame's ring holds stale_after of bars: a day of 1sec bars at most.
        at_most("validation.stale_after", self.stale_after, DAY, "bar rings hold that span")
        for name in ("max_contracts", "batch_limit", "report_every"):
            count(f"validation.{name}", getattr(self, name))
