"""The node's one-line status: what ``--json`` prints and the dashboard draws.

It is composed from three asks (stats, health, validation's contract summary)
plus the live mailbox statistics, so both views show the same numbers taken
at (almost) the same instant. The schema is documented in the README and kept
stable: fields are only ever added.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from actors.validation import TRADE_REASONS
from protocols.messages import BreakerState, ContractSummary, GetContracts

ASK_TIMEOUT = 2.0


class ContractView(msgspec.Struct, frozen=True):
    last_price: float | None
    trades: int


class NodeSnapshot(msgspec.Struct, frozen=True):
    """One status line (``pxnode demo|run --json`` prints one per second)."""

    ts: str
    """ISO 8601 UTC time the snapshot was taken."""
    uptime_s: float
    trades_accepted: int
    trades_rejected: dict[str, int]
    """Rejected trade items by reason (every reason present)."""
    bars_closed: int
    reconnects: dict[str, int]
    """Per hub: reconnections since start."""
    breaker: dict[str, BreakerState]
    """Per hub: "closed" | "open" | "half_open"."""
    health_score: float
    """0..1; 1 only when every hub is connected, subscribed, fresh and its breaker closed."""
    healthy: bool
    rss_bytes: int
    mailbox_drops: int
    """Messages dropped by conflating mailboxes, summed over the node (never silent)."""
    trades_per_s: float
    contracts: dict[str, ContractView]
    """Per contract id: last accepted trade price and accepted trades."""


async def take_snapshot(node: Any) -> NodeSnapshot:
    stats = await node.stats()
    health = await node.health()
    summaries: dict[str, ContractSummary] = await node.ref("validation").ask(
        GetContracts(), timeout=ASK_TIMEOUT
    )
    counters = stats.counters
    contracts = {
        contract: ContractView(summary.last_price, summary.trades)
        for contract, summary in sorted(summaries.items())
    }
    for contract in node.config.contracts:
        contracts.setdefault(contract, ContractView(None, 0))
    return NodeSnapshot(
        ts=datetime.fromtimestamp(node.registry.wall_time(), UTC).isoformat(),
        uptime_s=round(stats.uptime_s, 3),
        trades_accepted=counters.get("validation.trades_accepted", 0),
        trades_rejected={
            reason: counters.get(f"validation.trades_rejected.{reason}", 0)
            for reason in TRADE_REASONS
        },
        bars_closed=counters.get("bars.bars_closed", 0),
        reconnects={hub: h.reconnects for hub, h in health.hubs.items()},
        breaker={hub: h.breaker for hub, h in health.hubs.items()},
        health_score=round(health.score, 4),
        healthy=health.healthy,
        rss_bytes=stats.rss_bytes,
        mailbox_drops=sum(s.dropped for s in node.mailbox_statistics()),
        trades_per_s=round(stats.rates.get("validation.trades_accepted", 0.0), 1),
        contracts=contracts,
    )
