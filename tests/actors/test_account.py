"""The account actor: user-hub events folded into accounts, positions, working orders and
fills; bounded, and every refused frame counted."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from actors.account import AccountActor
from protocols.account import (
    AccountChanged,
    FillReceived,
    OrderChanged,
    PositionChanged,
    open_pnl,
)

ACCOUNT = {"id": 7001, "name": "PRAC", "balance": 50_000.0, "canTrade": True,
           "isVisible": True, "simulated": True}  # fmt: skip
MNQ = "CON.F.US.MNQ.Z25"


def order(id_: int, status: int, **more: Any) -> dict[str, Any]:
    return {"id": id_, "accountId": 7001, "contractId": MNQ, "creationTimestamp": f"T{id_}",
            "status": status, "type": 1, "side": 1, "size": 2, "limitPrice": 21100.0,
            **more}  # fmt: skip


def position(size: int, type_: int = 1) -> dict[str, Any]:
    return {"id": 6001, "accountId": 7001, "contractId": MNQ, "creationTimestamp": "T",
            "type": type_, "size": size, "averagePrice": 21000.0}  # fmt: skip


def trade(id_: int) -> dict[str, Any]:
    return {"id": id_, "accountId": 7001, "contractId": MNQ, "creationTimestamp": "T",
            "price": 21000.0, "profitAndLoss": None, "fees": 0.37, "side": 0, "size": 1,
            "voided": False, "orderId": 9001}  # fmt: skip


def args(payload: object, *, wrapped: bool = False) -> msgspec.Raw:
    body = {"action": 1, "data": payload} if wrapped else payload
    return msgspec.Raw(msgspec.json.encode([body]))


def test_events_build_the_current_state() -> None:
    actor = AccountActor()
    events = [
        actor.on_user_event("GatewayUserAccount", args(ACCOUNT)),
        actor.on_user_event("GatewayUserPosition", args(position(2), wrapped=True)),
        actor.on_user_event("GatewayUserOrder", args(order(9002, 1), wrapped=True)),
        actor.on_user_event("GatewayUserOrder", args(order(9003, 6))),
        actor.on_user_event("GatewayUserTrade", args(trade(8001))),
    ]
    assert [type(e) for e in events] == [
        AccountChanged, PositionChanged, OrderChanged, OrderChanged, FillReceived,
    ]  # fmt: skip
    state = actor.state()
    assert [a.balance for a in state.accounts] == [50_000.0]
    (pos,) = state.positions
    assert (pos.side, pos.size, pos.average_price) == ("long", 2, 21000.0)
    assert [(o.id, o.status, o.type, o.side) for o in state.orders] == [
        (9002, "open", "limit", "ask"),
        (9003, "pending", "limit", "ask"),
    ]
    assert [(f.side, f.size, f.fees) for f in state.fills] == [("bid", 1, 0.37)]
    assert open_pnl(pos, 21010.0, 2.0) == 40.0


def test_a_filled_order_stops_working_and_a_flat_position_closes() -> None:
    actor = AccountActor()
    actor.on_user_event("GatewayUserOrder", args(order(9002, 1)))
    actor.on_user_event("GatewayUserPosition", args(position(2)))
    actor.on_user_event("GatewayUserOrder", args(order(9002, 2, fillVolume=2)))
    actor.on_user_event("GatewayUserPosition", args(position(0)))
    assert actor.state().orders == () and actor.state().positions == ()


def test_a_short_position_profits_when_the_price_falls() -> None:
    actor = AccountActor()
    actor.on_user_event("GatewayUserPosition", args(position(3, type_=2)))
    (pos,) = actor.state().positions
    assert pos.side == "short" and open_pnl(pos, 20990.0, 2.0) == 60.0


def test_unknown_enum_values_read_unknown_not_fail() -> None:
    actor = AccountActor()
    actor.on_user_event("GatewayUserOrder", args(order(1, 1, type=42, side=9)))
    (o,) = actor.state().orders
    assert (o.type, o.side) == ("unknown", "unknown")


def test_fills_are_bounded_and_the_dropped_counted() -> None:
    actor = AccountActor(max_fills=3)
    for k in range(10):
        actor.on_user_event("GatewayUserTrade", args(trade(k)))
    state = actor.state()
    assert [f.id for f in state.fills] == [7, 8, 9]
    assert (state.fills_seen, state.fills_dropped) == (10, 7)


def test_tables_are_bounded() -> None:
    actor = AccountActor(max_items=2)
    for k in range(5):
        actor.on_user_event("GatewayUserOrder", args(order(k, 1)))
    assert len(actor.state().orders) == 2 and actor.counters["over_bound"] == 3
    assert actor.on_user_event("GatewayUserOrder", args(order(0, 3))) is not None
    assert len(actor.state().orders) == 1


@pytest.mark.parametrize(
    "target,arguments",
    [
        ("GatewayUserOrder", b"not json"),
        ("GatewayUserOrder", b"[]"),  # wrong arity
        ("GatewayUserOrder", b"[1, 2]"),
        ("GatewayUserOrder", b'[{"id": "x"}]'),  # wrong types
        ("GatewayUserPosition", b'[{"action": 1, "data": {"size": 1}}]'),  # fields missing
        ("GatewayUserMystery", msgspec.json.encode([ACCOUNT])),  # unknown target
    ],
)
def test_every_bad_frame_is_counted_not_raised(target: str, arguments: bytes) -> None:
    actor = AccountActor()
    assert actor.on_user_event(target, msgspec.Raw(arguments)) is None
    assert actor.counters["rejected"] == 1 and actor.state().orders == ()
