"""The demo trader: accounts, orders, positions and fills behind REST and the user hub.

A fixed book, dated relative to the sim's start so every run looks alike: one
active account holding a long MNQ position opened by the last of its fills and a
working limit order to take profit, plus one inactive account that only
``onlyActiveAccounts: false`` reveals. The balance is marked to market against
the simulated MNQ price, so GatewayUserAccount has something to report.
"""

from __future__ import annotations

from typing import Final

from protocols.gateway import Account, Order, Position, TradeRecord
from pxnode.sim.market import CONTRACTS, MarketSim, iso, parse_time

DEMO_ACCOUNT_ID: Final = 7001
DEMO_USERNAME: Final = "demo"
DEMO_API_KEY: Final = "demo-api-key"
"""The login the sim always accepts (the demo and the tests use it)."""
INACTIVE_ACCOUNT_ID: Final = 7002
CASH: Final = 50_000.0

# ProjectX enums (ints on the wire)
ORDER_OPEN, ORDER_FILLED = 1, 2
ORDER_LIMIT, ORDER_MARKET = 1, 2
SIDE_BID, SIDE_ASK = 0, 1
POSITION_LONG = 1

MNQ: Final = "CON.F.US.MNQ.Z25"
_MNQ: Final = CONTRACTS[MNQ]


class DemoAccounts:
    """What the demo user owns; ``start`` is the sim's start (unix seconds)."""

    def __init__(self, start: float) -> None:
        def at(offset: float) -> str:
            return iso(int((start + offset) * 1000) * 1000)

        self.start = start
        entry = _MNQ.start_price - 20.0
        self.orders = [
            Order(
                id=9001, account_id=DEMO_ACCOUNT_ID, contract_id=_MNQ.id,
                creation_timestamp=at(-3600), update_timestamp=at(-3600),
                status=ORDER_FILLED, type=ORDER_MARKET, side=SIDE_BID, size=2,
                fill_volume=2, filled_price=entry,
            ),
            Order(
                id=9002, account_id=DEMO_ACCOUNT_ID, contract_id=_MNQ.id,
                creation_timestamp=at(-1800), update_timestamp=at(-1800),
                status=ORDER_OPEN, type=ORDER_LIMIT, side=SIDE_ASK, size=2,
                limit_price=entry + 100.0, fill_volume=0, custom_tag="take-profit",
            ),
        ]  # fmt: skip
        self.trades = [
            TradeRecord(
                id=8001, account_id=DEMO_ACCOUNT_ID, contract_id=_MNQ.id,
                creation_timestamp=at(-3600), price=entry, profit_and_loss=None,
                fees=0.74, side=SIDE_BID, size=2, voided=False, order_id=9001,
            ),
        ]  # fmt: skip
        self.positions = [
            Position(
                id=6001, account_id=DEMO_ACCOUNT_ID, contract_id=_MNQ.id,
                creation_timestamp=at(-3600), type=POSITION_LONG, size=2, average_price=entry,
            ),
        ]  # fmt: skip

    def accounts(self, mnq_price: float, *, only_active: bool = True) -> list[Account]:
        active = Account(
            DEMO_ACCOUNT_ID, "PRAC-DEMO-7001", self.balance(mnq_price), True, True, True
        )
        if only_active:
            return [active]
        return [active, Account(INACTIVE_ACCOUNT_ID, "PRAC-DEMO-7002", CASH, False, False, True)]

    def balance(self, mnq_price: float) -> float:
        """Cash plus open profit, marked at ``mnq_price``."""
        points = _MNQ.tick_value / _MNQ.tick_size
        open_pnl = sum((mnq_price - p.average_price) * p.size * points for p in self.positions)
        fees = sum(t.fees for t in self.trades)
        return round(CASH + open_pnl - fees, 2)

    def open_orders(self, account_id: int) -> list[Order]:
        return [o for o in self.orders if o.account_id == account_id and o.status == ORDER_OPEN]

    def orders_between(self, account_id: int, lo_us: int, hi_us: int) -> list[Order]:
        return [
            o
            for o in self.orders
            if o.account_id == account_id and _within(o.creation_timestamp, lo_us, hi_us)
        ]

    def open_positions(self, account_id: int) -> list[Position]:
        return [p for p in self.positions if p.account_id == account_id]

    def trades_between(self, account_id: int, lo_us: int, hi_us: int) -> list[TradeRecord]:
        return [
            t
            for t in self.trades
            if t.account_id == account_id and _within(t.creation_timestamp, lo_us, hi_us)
        ]


def mark(sim: MarketSim) -> float:
    """The price the demo account is marked at (its position is in MNQ)."""
    return sim.last_price(MNQ) if MNQ in sim else _MNQ.start_price


def _within(stamp: str, lo_us: int, hi_us: int) -> bool:
    return lo_us <= parse_time(stamp) < hi_us
