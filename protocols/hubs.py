"""The vocabulary of the two SignalR hubs: subscriptions, targets, connection facts.

Commands (``SubscribeContract``, ...) go to a connection actor; facts
(``Connected``, ``Disconnected``, ``HeartbeatMeasured``) come from it on
``topic.events``; ``ReconnectRequested`` comes from health when a feed went
stale. The hub method names live here too, so the connection actor and the
simulated gateway read one table and cannot disagree about what
"subscribe to depth" is called on the wire.

A subscription kind maps to a pair of hub methods (subscribe, unsubscribe).
Market methods take ``[contractId]``; user methods take ``[accountId]``,
except ``SubscribeAccounts``/``UnsubscribeAccounts``, which take no argument
and cover every account of the token.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, get_args

from protocols.messages import Message

HubName: TypeAlias = Literal["market", "user"]
FeedName: TypeAlias = Literal["market", "user", "stream"]
"""What health watches: a gateway hub, or the NATS stream a consuming node reads."""
MarketKind: TypeAlias = Literal["quotes", "trades", "depth"]
AccountKind: TypeAlias = Literal["accounts", "orders", "positions", "trades"]

HUBS: Final[tuple[HubName, ...]] = get_args(HubName)
FEEDS: Final[tuple[FeedName, ...]] = get_args(FeedName)
MARKET_KINDS: Final[tuple[MarketKind, ...]] = get_args(MarketKind)
ACCOUNT_KINDS: Final[tuple[AccountKind, ...]] = get_args(AccountKind)

MARKET_METHODS: Final[dict[str, tuple[str, str]]] = {
    "quotes": ("SubscribeContractQuotes", "UnsubscribeContractQuotes"),
    "trades": ("SubscribeContractTrades", "UnsubscribeContractTrades"),
    "depth": ("SubscribeContractMarketDepth", "UnsubscribeContractMarketDepth"),
}
"""Market-hub methods per kind: (subscribe, unsubscribe), each called with ``[contractId]``."""

ACCOUNT_METHODS: Final[dict[str, tuple[str, str]]] = {
    "accounts": ("SubscribeAccounts", "UnsubscribeAccounts"),
    "orders": ("SubscribeOrders", "UnsubscribeOrders"),
    "positions": ("SubscribePositions", "UnsubscribePositions"),
    "trades": ("SubscribeTrades", "UnsubscribeTrades"),
}
"""User-hub methods per kind: (subscribe, unsubscribe), with ``[accountId]``.

``accounts`` is called with ``[]`` (see ``ACCOUNT_WIDE``).
"""

ACCOUNT_WIDE: Final[frozenset[str]] = frozenset({"accounts"})
"""Kinds whose methods take no account id: one subscription serves every account."""

MARKET_EVENTS: Final = ("GatewayQuote", "GatewayTrade", "GatewayDepth")
"""Targets the market hub invokes on the client, arguments ``[contractId, payload]``."""

USER_EVENTS: Final = (
    "GatewayUserAccount",
    "GatewayUserOrder",
    "GatewayUserPosition",
    "GatewayUserTrade",
)
"""Targets the user hub invokes on the client, arguments ``[payload]``."""


# ------------------------------------------------------------------- commands


class SubscribeContract(Message, frozen=True):
    """Stream ``kinds`` of ``contract`` from the market hub, now and after every reconnect."""

    contract: str
    kinds: tuple[MarketKind, ...] = MARKET_KINDS


class UnsubscribeContract(Message, frozen=True):
    contract: str
    kinds: tuple[MarketKind, ...] = MARKET_KINDS


class SubscribeAccount(Message, frozen=True):
    """Stream ``kinds`` of ``account_id`` from the user hub, now and after every reconnect."""

    account_id: int
    kinds: tuple[AccountKind, ...] = ACCOUNT_KINDS


class UnsubscribeAccount(Message, frozen=True):
    account_id: int
    kinds: tuple[AccountKind, ...] = ACCOUNT_KINDS


class ReconnectRequested(Message, frozen=True):
    """Drop the socket and connect again, keeping every subscription (e.g. a stale feed)."""

    hub: HubName
    reason: str


HubCommand: TypeAlias = (
    SubscribeContract | UnsubscribeContract | SubscribeAccount | UnsubscribeAccount
)


# ---------------------------------------------------------------------- facts


class Connected(Message, frozen=True):
    """The hub is open and every subscription of its book has been sent again (``stream``:
    a consuming node's durable consumer is bound).

    ``connection_id`` is the public id from negotiation (None when it was skipped).
    """

    hub: FeedName
    connection_id: str | None = None


class Disconnected(Message, frozen=True):
    """The hub's socket is gone; ``reason`` never contains a secret.

    ``silent_since``: the wall time (unix s) of the socket's last hub event, or of its
    opening if it brought none; None if no socket opened. A silent socket is noticed
    only a timeout later, and a back-fill must reach back to when the feed stopped.
    """

    hub: HubName
    reason: str
    silent_since: float | None = None


class HeartbeatMeasured(Message, frozen=True):
    """Round trip of a websocket ping on the hub, in seconds (queueing on our side included)."""

    hub: HubName
    rtt: float
