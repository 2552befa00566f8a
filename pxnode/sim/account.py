"""The demo trader: accounts, orders, positions and fills behind REST and the user hub.

It starts from a fixed book, dated relative to the sim's start so every run
looks alike: one active account holding a long MNQ position opened by the last
of its fills and a working limit order to take profit, plus one inactive
account that only ``onlyActiveAccounts: false`` reveals.

Then it trades (``step``): every ``TRADE_EVERY`` seconds or so (seeded) the
demo trader sends a market order for 1-2 MNQ, filled at once at the sim's last
price, keeping its position within ``MAX_POSITION`` lots either way; the
working limit order fills when the market reaches it. Each fill changes the
order, the position (average price, side, size 0 when flat) and the balance
(cash + realised P&L - fees + open P&L marked at the last price), and ``step``
returns those changes as user-hub events, so the user hub is as live as the
real one.
"""

from __future__ import annotations

import random
from typing import Final

import msgspec

from protocols.gateway import Account, Order, Position, TradeRecord
from pxnode.sim.contracts import CONTRACTS
from pxnode.sim.market import MarketSim, iso, parse_time

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
POSITION_LONG, POSITION_SHORT = 1, 2
FEE_PER_LOT: Final = 0.37
TRADE_EVERY: Final = 30.0
"""Mean seconds between the demo trader's market orders."""
MARK_EVERY: Final = 5.0
"""Seconds between balance updates (GatewayUserAccount) while the price moves."""
MAX_POSITION: Final = 4
KEEP: Final = 1000
"""Orders and fills the sim keeps (the oldest go; a long demo stays flat in memory)."""

UserChange = tuple[str, Account | Order | Position | TradeRecord]
"""(user-hub topic, payload): what ``step`` changed, in order."""

MNQ: Final = "CON.F.US.MNQ.Z25"
_MNQ: Final = CONTRACTS[MNQ]


class DemoAccounts:
    """What the demo user owns; ``start`` is the sim's start (unix seconds)."""

    def __init__(self, start: float, seed: int = 0) -> None:
        def at(offset: float) -> str:
            return iso(int((start + offset) * 1000) * 1000)

        self.start = start
        self._random = random.Random(seed)
        self._next_trade = start + self._random.expovariate(1 / TRADE_EVERY)
        self._next_mark = start + MARK_EVERY
        self._ids = 10_000
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
        """Cash plus realised and open profit (marked at ``mnq_price``), less fees."""
        points = _MNQ.tick_value / _MNQ.tick_size
        open_pnl = sum(
            (mnq_price - p.average_price) * p.size * points * (1 if p.type == POSITION_LONG else -1)
            for p in self.positions
        )
        realised = sum(t.profit_and_loss or 0.0 for t in self.trades)
        fees = sum(t.fees for t in self.trades)
        return round(CASH + realised + open_pnl - fees, 2)

    # ------------------------------------------------------------ trading

    def step(self, now: float, mnq_price: float) -> list[UserChange]:
        """What the demo trader did by ``now`` (unix seconds), the market at ``mnq_price``."""
        changes: list[UserChange] = []
        for order in [o for o in self.open_orders(DEMO_ACCOUNT_ID) if self._reached(o, mnq_price)]:
            changes += self._fill(order, order.limit_price or mnq_price, now)
        if now >= self._next_trade:
            self._next_trade = now + self._random.expovariate(1 / TRADE_EVERY)
            changes += self._fill(self._market_order(now), mnq_price, now)
        if changes or now >= self._next_mark:
            self._next_mark = now + MARK_EVERY
            changes.append(("accounts", self.accounts(mnq_price)[0]))
        return changes

    def _reached(self, order: Order, price: float) -> bool:
        if order.type != ORDER_LIMIT or order.limit_price is None:
            return False
        return price >= order.limit_price if order.side == SIDE_ASK else price <= order.limit_price

    def _market_order(self, now: float) -> Order:
        held = self._signed_size()
        size = self._random.choice((1, 2))
        side = self._random.choice((SIDE_BID, SIDE_ASK))
        if abs(held + (size if side == SIDE_BID else -size)) > MAX_POSITION:
            side = SIDE_ASK if side == SIDE_BID else SIDE_BID  # turn back towards flat
        self._ids += 1
        stamp = iso(int(now * 1_000_000))
        return Order(
            id=self._ids, account_id=DEMO_ACCOUNT_ID, contract_id=MNQ,
            creation_timestamp=stamp, update_timestamp=stamp, status=ORDER_OPEN,
            type=ORDER_MARKET, side=side, size=size, fill_volume=0,
        )  # fmt: skip

    def _signed_size(self) -> int:
        return sum(p.size if p.type == POSITION_LONG else -p.size for p in self.positions)

    def _fill(self, order: Order, price: float, now: float) -> list[UserChange]:
        stamp = iso(int(now * 1_000_000))
        filled = msgspec.structs.replace(
            order, status=ORDER_FILLED, fill_volume=order.size, filled_price=price,
            update_timestamp=stamp,
        )  # fmt: skip
        self.orders = [*[o for o in self.orders if o.id != order.id][-KEEP + 1 :], filled]
        held = self._signed_size()
        signed = order.size if order.side == SIDE_BID else -order.size
        pnl = None
        average = self.positions[0].average_price if self.positions else price
        if held and (held > 0) != (signed > 0):  # reduces, closes or flips
            closed = min(abs(held), abs(signed))
            points = _MNQ.tick_value / _MNQ.tick_size
            pnl = round((price - average) * closed * points * (1 if held > 0 else -1), 2)
            if abs(signed) > abs(held):
                average = price
        else:
            average = (average * abs(held) + price * abs(signed)) / (abs(held) + abs(signed))
        self._ids += 1
        trade = TradeRecord(
            id=self._ids, account_id=DEMO_ACCOUNT_ID, contract_id=MNQ,
            creation_timestamp=stamp, price=price, profit_and_loss=pnl,
            fees=round(FEE_PER_LOT * order.size, 2), side=order.side, size=order.size,
            voided=False, order_id=order.id,
        )  # fmt: skip
        self.trades = [*self.trades[-KEEP + 1 :], trade]
        size = held + signed
        position = Position(
            id=self.positions[0].id if self.positions else self._ids, account_id=DEMO_ACCOUNT_ID,
            contract_id=MNQ, creation_timestamp=stamp,
            type=POSITION_LONG if size >= 0 else POSITION_SHORT, size=abs(size),
            average_price=round(average, 2),
        )  # fmt: skip
        self.positions = [position] if size else []
        return [("orders", filled), ("trades", trade), ("positions", position)]

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
