"""What the health actor answers: ``GetHealth`` in, ``HealthReport`` out.

A report is a verdict with its evidence. ``healthy`` is the verdict; the
per-hub records, per-contract ages, score components and ``reasons`` are the
evidence, all taken at the same instant (``taken_at``, unix seconds).

The verdict is deliberately strict, because a health signal that says "fine"
during an outage is worse than none: a hub is healthy only when it is
connected, its circuit breaker is closed, its connection actor has reported
healthy since its last (re)start, and (market hub) its feed is not stale. So
"breaker closed but hub down" and "breaker open but healthy" cannot be
reported. Ages are ``None`` for "never heard of", never a made-up number.
"""

from __future__ import annotations

import msgspec

from protocols.messages import BreakerState, Message


class GetHealth(Message, frozen=True):
    """Ask health for a ``HealthReport`` (``ref.ask(GetHealth(), timeout)``)."""


class HubHealth(msgspec.Struct, frozen=True):
    """One hub as health sees it (times in seconds)."""

    healthy: bool
    """The verdict: connected, breaker closed, child_healthy and not stale."""
    connected: bool
    """Between the connection's ``Connected`` and its ``Disconnected`` (or its exit)."""
    breaker: BreakerState
    """Last state the supervisor published for the connection child (``closed`` until told)."""
    child_healthy: bool
    """The connection child reported healthy since its last (re)start."""
    stale: bool
    """Connected and subscribed, but no data for longer than ``stale_after`` (market hub)."""
    connection_id: str | None
    connects: int
    reconnects: int
    """Connections after the first one."""
    reconnect_requests: int
    """Stale-feed reconnects health asked the connection for."""
    last_event_age: float | None
    """Since health last heard from the hub: data, connect or heartbeat."""
    rtt_p50: float | None
    rtt_max: float | None
    """Heartbeat round trips over the last ``rtt_samples`` measurements."""
    rtt_samples: int


class ContractHealth(msgspec.Struct, frozen=True):
    last_event_age: float | None
    """Since the newest trade/quote/depth of the contract was received; None: never."""
    fresh: bool
    """Data within ``stale_after`` (or the market hub connected less than that ago)."""


class HealthComponents(msgspec.Struct, frozen=True):
    """Parts of the score, each in [0, 1]; 1 is perfect.

    connectivity: share of hubs connected; readiness: share of connection
    children that reported healthy since their last start; breaker: closed 1,
    half_open 0.5, open 0, averaged; freshness: 0 while the market feed is
    stale, else the share of fresh contracts; latency: from each hub's median
    heartbeat round trip (1 at or below ``rtt_good``, 0 at or above ``rtt_bad``).
    """

    connectivity: float
    readiness: float
    breaker: float
    freshness: float
    latency: float


class HealthReport(Message, frozen=True):
    """The answer to ``GetHealth``.

    ``score`` is the weighted mean of ``components``; every weight is positive,
    so an unhealthy node always scores below 1. ``reasons`` explains every
    deduction; a quiet contract alone lowers the score but leaves ``healthy``
    true (an illiquid contract is not an outage), and its name is listed.
    ``counters`` are health's own cumulative counters (what it received,
    rejected and requested).
    """

    taken_at: float
    healthy: bool
    score: float
    components: HealthComponents
    hubs: dict[str, HubHealth]
    contracts: dict[str, ContractHealth]
    feed_age: float | None
    """Since the newest market data of any contract; None: none yet."""
    reasons: list[str]
    counters: dict[str, int]
