"""The demo trader: seeded market orders that fill at the sim's price, positions and a
balance that follow, the take-profit that fills when the market reaches it."""

from __future__ import annotations

from protocols.gateway import Account, Order, Position, TradeRecord
from pxnode.sim.account import (
    CASH,
    DEMO_ACCOUNT_ID,
    MAX_POSITION,
    ORDER_FILLED,
    TRADE_EVERY,
    DemoAccounts,
)

START = 1_764_000_000.0


def run(accounts: DemoAccounts, seconds: float, price: float) -> list[tuple[str, object]]:
    changes: list[tuple[str, object]] = []
    for k in range(int(seconds)):
        changes += accounts.step(START + k, price + (k % 7) * 0.25)
    return changes


def test_the_demo_trader_trades_and_its_state_follows() -> None:
    accounts = DemoAccounts(START, seed=1)
    changes = run(accounts, 600, 21000.0)
    fills = [p for topic, p in changes if topic == "trades"]
    assert 600 / TRADE_EVERY / 3 < len(fills) < 600 / TRADE_EVERY * 3
    assert all(isinstance(f, TradeRecord) and f.account_id == DEMO_ACCOUNT_ID for f in fills)
    held = sum(p.size if p.type == 1 else -p.size for p in accounts.positions)
    assert abs(held) <= MAX_POSITION
    assert [t for t, _ in changes[:3]] == ["orders", "trades", "positions"]
    orders = [p for topic, p in changes if topic == "orders"]
    assert all(isinstance(o, Order) and o.status == ORDER_FILLED for o in orders)
    last = [p for topic, p in changes if topic == "accounts"][-1]
    assert isinstance(last, Account) and last.balance == accounts.balance(
        21000.0 + (599 % 7) * 0.25
    )


def test_one_seed_trades_alike() -> None:
    a, b = DemoAccounts(START, seed=5), DemoAccounts(START, seed=5)
    assert run(a, 300, 21000.0) == run(b, 300, 21000.0)
    assert run(DemoAccounts(START, seed=6), 300, 21000.0) != run(a, 300, 21000.0)


def test_the_balance_is_marked_to_market_between_fills() -> None:
    accounts = DemoAccounts(START, seed=1)
    (position,) = accounts.positions
    low, high = accounts.balance(21000.0), accounts.balance(21010.0)
    assert round(high - low, 2) == 10.0 * position.size * 2.0  # MNQ: $2 a point
    assert CASH - 1 < accounts.balance(position.average_price) < CASH


def test_the_take_profit_fills_when_the_market_reaches_it() -> None:
    accounts = DemoAccounts(START, seed=1)
    (working,) = accounts.open_orders(DEMO_ACCOUNT_ID)
    assert working.limit_price is not None
    changes = accounts.step(START + 0.5, working.limit_price + 1)
    assert ("orders", working) not in changes
    (filled,) = [p for t, p in changes if t == "orders" and isinstance(p, Order)]
    assert filled.id == working.id and filled.status == ORDER_FILLED
    (fill,) = [p for t, p in changes if t == "trades" and isinstance(p, TradeRecord)]
    assert fill.price == working.limit_price
    assert fill.profit_and_loss == 400.0  # 2 lots x 100 points x $2
    (closed,) = [p for t, p in changes if t == "positions" and isinstance(p, Position)]
    assert closed.size == 0 and accounts.positions == []
    assert accounts.open_orders(DEMO_ACCOUNT_ID) == []
