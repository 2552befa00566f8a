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
from protocols.account import AccountState, OpenPosition, open_pnl
from protocols.messages import BreakerState, ContractSummary, GetContracts
from pxnode.sim import contract_symbol, point_value

ASK_TIMEOUT = 2.0


class ContractView(msgspec.Struct, frozen=True):
    last_price: float | None
    trades: int


class AccountView(msgspec.Struct, frozen=True):
    id: int
    name: str
    balance: float
    can_trade: bool
    open_pnl: float | None
    """Sum of its positions' ``open_pnl``; None if one of them has none."""


class PositionView(msgspec.Struct, frozen=True):
    account_id: int
    contract: str
    symbol: str
    side: str
    """"long" | "short"."""
    size: int
    average_price: float
    last_price: float | None
    """The contract's last accepted trade price; None before its first trade."""
    open_pnl_points: float | None
    """(last - average) x size, negated for a short: profit in price points."""
    open_pnl: float | None
    """``open_pnl_points`` in money, where the contract's point value is known."""


class OrderView(msgspec.Struct, frozen=True):
    id: int
    account_id: int
    contract: str
    symbol: str
    status: str
    """open | pending | pending_cancellation | suspended (working orders only)."""
    type: str
    """limit | market | stop_limit | stop | trailing_stop | join_bid | join_ask."""
    side: str
    """bid (buy) | ask (sell)."""
    size: int
    limit_price: float | None
    stop_price: float | None
    filled: int


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
    accounts: list[AccountView] = msgspec.field(default_factory=list)
    positions: list[PositionView] = msgspec.field(default_factory=list)
    """Open positions."""
    orders: list[OrderView] = msgspec.field(default_factory=list)
    """Working orders."""
    fills: int = 0
    """Fills of the accounts seen since start."""


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
    account: AccountState = await node.account_state()
    positions = [
        _position(p, contracts.get(p.contract), account.point_values) for p in account.positions
    ]
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
        accounts=[
            AccountView(a.id, a.name, a.balance, a.can_trade, _sum_pnl(a.id, positions))
            for a in account.accounts
        ],
        positions=positions,
        orders=[
            OrderView(
                o.id,
                o.account_id,
                o.contract,
                contract_symbol(o.contract),
                o.status,
                o.type,
                o.side,
                o.size,
                o.limit_price,
                o.stop_price,
                o.filled,
            )
            for o in account.orders
        ],
        fills=account.fills_seen,
    )


def _position(
    p: OpenPosition, contract: ContractView | None, point_values: dict[str, float]
) -> PositionView:
    last = contract.last_price if contract else None
    points = None if last is None else open_pnl(p, last, 1.0)
    # The gateway's tick value (Contract/searchById); the sim's catalogue for a tape's node.
    value = point_values.get(p.contract) or point_value(p.contract)
    money = None if points is None or value is None else round(points * value, 2)
    return PositionView(
        p.account_id, p.contract, contract_symbol(p.contract), p.side, p.size,
        p.average_price, last, points, money,
    )  # fmt: skip


def _sum_pnl(account_id: int, positions: list[PositionView]) -> float | None:
    mine = [p.open_pnl for p in positions if p.account_id == account_id]
    if any(pnl is None for pnl in mine):
        return None
    return round(sum(pnl for pnl in mine if pnl is not None), 2)
