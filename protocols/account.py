"""The trader's account state as the node keeps it: accounts, open positions, working
orders and fills, read-only.

The gateway speaks ints (ProjectX enums) in camelCase; the node keeps snake_case
structs with the enums as words, converted here once, at the wire edge, so
``--json``, the dashboard and an embedding application never see a magic number.
The ints are the gateway's documented values:

* OrderStatus: 0 none, 1 open, 2 filled, 3 cancelled, 4 expired, 5 rejected,
  6 pending, 7 pending_cancellation, 8 suspended (working: open, pending,
  pending_cancellation, suspended);
* OrderType: 1 limit, 2 market, 3 stop_limit, 4 stop, 5 trailing_stop,
  6 join_bid, 7 join_ask (0 unknown);
* OrderSide: 0 bid (buy), 1 ask (sell); PositionType: 1 long, 2 short.

A value outside these reads ``unknown`` rather than failing: a gateway that adds
an enum member must not blank the trader's account.
"""

from __future__ import annotations

from typing import Final

import msgspec

from protocols import gateway as gw
from protocols.messages import Message

ORDER_STATUS: Final = {
    0: "none",
    1: "open",
    2: "filled",
    3: "cancelled",
    4: "expired",
    5: "rejected",
    6: "pending",
    7: "pending_cancellation",
    8: "suspended",
}
WORKING_STATUSES: Final = frozenset({"open", "pending", "pending_cancellation", "suspended"})
ORDER_TYPE: Final = {
    0: "unknown",
    1: "limit",
    2: "market",
    3: "stop_limit",
    4: "stop",
    5: "trailing_stop",
    6: "join_bid",
    7: "join_ask",
}
SIDE: Final = {0: "bid", 1: "ask"}
POSITION_TYPE: Final = {1: "long", 2: "short"}


class AccountInfo(msgspec.Struct, frozen=True):
    id: int
    name: str
    balance: float
    can_trade: bool
    simulated: bool


class OpenPosition(msgspec.Struct, frozen=True):
    """``size`` 0 is the gateway saying the position is closed."""

    account_id: int
    contract: str
    side: str
    """"long" | "short" (or "unknown")."""
    size: int
    average_price: float
    opened_at: str


class WorkingOrder(msgspec.Struct, frozen=True):
    id: int
    account_id: int
    contract: str
    status: str
    type: str
    side: str
    """"bid" (buy) | "ask" (sell)."""
    size: int
    limit_price: float | None
    stop_price: float | None
    filled: int
    created_at: str

    @property
    def working(self) -> bool:
        return self.status in WORKING_STATUSES


class Fill(msgspec.Struct, frozen=True):
    id: int
    account_id: int
    contract: str
    order_id: int
    side: str
    size: int
    price: float
    fees: float
    profit_and_loss: float | None
    """Realised by this fill; None for a half-turn (it opened or added)."""
    at: str
    voided: bool


class AccountChanged(Message, frozen=True):
    account: AccountInfo


class PositionChanged(Message, frozen=True):
    position: OpenPosition


class OrderChanged(Message, frozen=True):
    order: WorkingOrder


class FillReceived(Message, frozen=True):
    fill: Fill


class AccountSynced(Message, frozen=True):
    """The REST searches of ``account_id`` were merged into the node's state (at start
    and after every reconnect of the user hub); what they changed was told before it.

    ``orders_gone``: orders the node held as working that the gateway no longer
    lists as open (filled, cancelled or expired while the hub was away; their
    final status is not fetched). A position that closed meanwhile is told as a
    ``PositionChanged`` of size 0.
    """

    account_id: int
    orders_gone: tuple[int, ...] = ()


AccountEvent = AccountChanged | PositionChanged | OrderChanged | FillReceived | AccountSynced


class GetAccountState(Message, frozen=True):
    pass


class AccountState(Message, frozen=True):
    """The answer to ``GetAccountState``: what the account actor holds now."""

    accounts: tuple[AccountInfo, ...]
    positions: tuple[OpenPosition, ...]
    """Open positions only (size > 0), by account then contract."""
    orders: tuple[WorkingOrder, ...]
    """Working orders only, oldest first."""
    fills: tuple[Fill, ...]
    """The newest fills kept (at most the actor's ``max_fills``), oldest first."""
    fills_seen: int
    fills_dropped: int
    """Fills no longer kept because newer ones took their place (counted, never silent)."""
    synced_at: float | None = None
    """Unix time the last REST sync completed (None: none yet, or a node without a gateway)."""
    sync_error: str | None = None
    """Why the last REST sync failed, one line without secrets (None once one succeeds)."""
    point_values: dict[str, float] = msgspec.field(default_factory=dict)
    """Money per 1.0 of price (tickValue / tickSize, from Contract/searchById) of the
    contracts of the positions and orders, so open P&L is money for any contract."""


def account_info(a: gw.Account) -> AccountInfo:
    return AccountInfo(a.id, a.name, a.balance, a.can_trade, a.simulated)


def open_position(p: gw.Position) -> OpenPosition:
    side = POSITION_TYPE.get(p.type, "unknown")
    return OpenPosition(
        p.account_id, p.contract_id, side, p.size, p.average_price, p.creation_timestamp
    )


def working_order(o: gw.Order) -> WorkingOrder:
    return WorkingOrder(
        id=o.id,
        account_id=o.account_id,
        contract=o.contract_id,
        status=ORDER_STATUS.get(o.status, "unknown"),
        type=ORDER_TYPE.get(o.type, "unknown"),
        side=SIDE.get(o.side, "unknown"),
        size=o.size,
        limit_price=o.limit_price,
        stop_price=o.stop_price,
        filled=o.fill_volume or 0,
        created_at=o.creation_timestamp,
    )


def fill(t: gw.TradeRecord) -> Fill:
    return Fill(
        id=t.id,
        account_id=t.account_id,
        contract=t.contract_id,
        order_id=t.order_id,
        side=SIDE.get(t.side, "unknown"),
        size=t.size,
        price=t.price,
        fees=t.fees,
        profit_and_loss=t.profit_and_loss,
        at=t.creation_timestamp,
        voided=t.voided,
    )


def decode_user_event(target: str, payload: bytes | msgspec.Raw) -> AccountEvent:
    """One user-hub payload (bare or wrapped) as the node's event.

    Raises ``msgspec.ValidationError``/``DecodeError`` for a wrong shape and
    ``KeyError`` for a target that is not a user event; the caller counts it.
    """
    match target:
        case "GatewayUserAccount":
            return AccountChanged(account_info(gw.decode_user_event(gw.UserAccount, payload).data))
        case "GatewayUserPosition":
            return PositionChanged(
                open_position(gw.decode_user_event(gw.UserPosition, payload).data)
            )
        case "GatewayUserOrder":
            return OrderChanged(working_order(gw.decode_user_event(gw.UserOrder, payload).data))
        case "GatewayUserTrade":
            return FillReceived(fill(gw.decode_user_event(gw.UserTrade, payload).data))
    raise KeyError(target)


def open_pnl(position: OpenPosition, last: float, point_value: float) -> float:
    """Profit of ``position`` marked at ``last``; ``point_value`` is money per 1.0 of price."""
    sign = -1 if position.side == "short" else 1
    return sign * (last - position.average_price) * position.size * point_value
