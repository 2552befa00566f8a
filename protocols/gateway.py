"""ProjectX Gateway wire schemas (hub payloads and REST bodies).

camelCase is renamed at this edge only (``rename="camel"``); inside pxnode every
field is snake_case. Unknown fields are ignored (msgspec's default), so a gateway
that adds fields never breaks us. One Decoder per type, built once and reused
(``decoder(T)``), one Encoder for all (``ENCODER``). Subclasses repeat
``frozen=True`` only because mypy's dataclass_transform does not inherit it.
"""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

import msgspec


class Wire(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """Base of every gateway wire type."""


# ----------------------------------------------------------------- hub payloads


class TradeItem(Wire, frozen=True):
    """One item of a GatewayTrade payload (the payload is a list of these, or one)."""

    symbol_id: str
    price: float
    timestamp: str
    type: int
    volume: int


class QuoteItem(Wire, frozen=True):
    """GatewayQuote payload; every field may be missing (partial quotes)."""

    symbol: str | None = None
    symbol_name: str | None = None
    last_price: float | None = None
    best_bid: float | None = None
    best_ask: float | None = None
    change: float | None = None
    change_percent: float | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    volume: int | None = None
    last_updated: str | None = None
    timestamp: str | None = None


class DepthItem(Wire, frozen=True):
    timestamp: str
    type: int
    price: float
    volume: int
    current_volume: int


TRADE_ARGS = msgspec.json.Decoder(tuple[str, list[TradeItem] | TradeItem])
"""Fast path for a whole GatewayTrade arguments array; on failure judge item by item."""

QUOTE_ARGS = msgspec.json.Decoder(tuple[str, QuoteItem])
DEPTH_ARGS = msgspec.json.Decoder(tuple[str, list[DepthItem] | DepthItem])


# ----------------------------------------------------------------------- codecs

T = TypeVar("T")

ENCODER = msgspec.json.Encoder()
"""The one JSON encoder of the gateway edge (encoders are stateless, so one serves all types)."""

_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def decoder(kind: type[T]) -> msgspec.json.Decoder[T]:
    """The decoder for ``kind``, built on first use and reused after.

    Building a Decoder compiles the type; doing it per message would cost more
    than the decode itself.
    """
    try:
        return _DECODERS[kind]
    except KeyError:
        built = _DECODERS[kind] = msgspec.json.Decoder(kind)
        return built


# ------------------------------------------------------------------ REST bodies
#
# Every body is written out in full (``omit_defaults=False``): the gateway
# wants ``onlyActiveAccounts`` and ``live`` present, and answers carry
# ``success``/``errorCode``/``errorMessage`` even when they hold the defaults.


class RestRequest(Wire, frozen=True, omit_defaults=False):
    """Base of every REST request body."""


class RestResponse(Wire, frozen=True, kw_only=True, omit_defaults=False):
    """Base of every REST response: the gateway reports failure in-band.

    Payload fields of the subclasses default to empty so that a failure answer
    (``success: false`` and nothing else) still decodes and can be judged.
    """

    success: bool = True
    error_code: int = 0
    error_message: str | None = None


class BarUnit(enum.IntEnum):
    SECOND = 1
    MINUTE = 2
    HOUR = 3
    DAY = 4
    WEEK = 5
    MONTH = 6


class LoginKeyRequest(RestRequest, frozen=True):
    user_name: str
    api_key: str


class LoginResponse(RestResponse, frozen=True):
    token: str | None = None


class ValidateResponse(RestResponse, frozen=True):
    """Answer of ``Auth/validate`` (its request body is ``{}``)."""

    new_token: str | None = None


class LogoutResponse(RestResponse, frozen=True):
    pass


class Account(Wire, frozen=True):
    id: int
    name: str
    balance: float
    can_trade: bool
    is_visible: bool
    simulated: bool


class AccountSearchRequest(RestRequest, frozen=True):
    only_active_accounts: bool = True


class AccountSearchResponse(RestResponse, frozen=True):
    accounts: list[Account] = []


class Contract(Wire, frozen=True):
    id: str
    name: str
    description: str
    tick_size: float
    tick_value: float
    active_contract: bool
    symbol_id: str


class ContractSearchRequest(RestRequest, frozen=True):
    search_text: str
    live: bool = False


class ContractSearchResponse(RestResponse, frozen=True):
    """Answer of ``Contract/search`` and of ``Contract/available``."""

    contracts: list[Contract] = []


class ContractSearchByIdRequest(RestRequest, frozen=True):
    contract_id: str


class ContractSearchByIdResponse(RestResponse, frozen=True):
    contract: Contract | None = None


class ContractAvailableRequest(RestRequest, frozen=True):
    live: bool = False


class HistoryBar(Wire, frozen=True):
    """One history bar; ``t`` is ISO 8601 with offset (the bar's start)."""

    t: str
    o: float
    h: float
    l: float  # noqa: E741 - the gateway's field name
    c: float
    v: int


class RetrieveBarsRequest(RestRequest, frozen=True):
    """``unit`` is a ``BarUnit`` value; ``unit_number`` frames of it make one bar."""

    contract_id: str
    live: bool
    start_time: str
    end_time: str
    unit: int
    unit_number: int
    limit: int
    include_partial_bar: bool


class RetrieveBarsResponse(RestResponse, frozen=True):
    """Bars newest first, as the gateway sends them."""

    bars: list[HistoryBar] = []


class Order(Wire, frozen=True):
    id: int
    account_id: int
    contract_id: str
    creation_timestamp: str
    status: int
    type: int
    side: int
    size: int
    update_timestamp: str | None = None
    limit_price: float | None = None
    stop_price: float | None = None
    fill_volume: int | None = None
    filled_price: float | None = None
    custom_tag: str | None = None


class OrderSearchRequest(RestRequest, frozen=True):
    account_id: int
    start_timestamp: str | None = None
    end_timestamp: str | None = None


class OpenOrderSearchRequest(RestRequest, frozen=True):
    account_id: int


class OrderSearchResponse(RestResponse, frozen=True):
    """Answer of ``Order/search`` and of ``Order/searchOpen``."""

    orders: list[Order] = []


class Position(Wire, frozen=True):
    id: int
    account_id: int
    contract_id: str
    creation_timestamp: str
    type: int
    size: int
    average_price: float


class PositionSearchRequest(RestRequest, frozen=True):
    account_id: int


class PositionSearchResponse(RestResponse, frozen=True):
    positions: list[Position] = []


class TradeRecord(Wire, frozen=True):
    """A fill of the account (``profit_and_loss`` is null for a half-turn)."""

    id: int
    account_id: int
    contract_id: str
    creation_timestamp: str
    price: float
    profit_and_loss: float | None
    fees: float
    side: int
    size: int
    voided: bool
    order_id: int


class TradeSearchRequest(RestRequest, frozen=True):
    account_id: int
    start_timestamp: str
    end_timestamp: str | None = None


class TradeSearchResponse(RestResponse, frozen=True):
    trades: list[TradeRecord] = []


# ------------------------------------------------------------ user hub payloads


class UserAccount(Account, frozen=True):
    """GatewayUserAccount payload."""


class UserOrder(Order, frozen=True):
    """GatewayUserOrder payload."""


class UserPosition(Position, frozen=True):
    """GatewayUserPosition payload."""


class UserTrade(TradeRecord, frozen=True):
    """GatewayUserTrade payload."""


class Wrapped(Wire, Generic[T], frozen=True):
    """A user-hub payload as ``{"action": …, "data": …}``.

    ``decode_user_event`` returns every payload in this shape; a bare payload
    has ``action=None``.
    """

    data: T
    action: int | None = None


class _Envelope(Wire, frozen=True):
    data: msgspec.Raw = msgspec.Raw()  # empty (falsy) when the payload is bare
    action: int | None = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)


def decode_user_event(kind: type[T], payload: bytes | msgspec.Raw) -> Wrapped[T]:
    """Decode one user-hub payload that the gateway may or may not have wrapped.

    No user payload has a ``data`` field of its own, so its presence is what
    tells the two shapes apart. Wrong shapes raise ``msgspec.ValidationError``
    (or ``msgspec.DecodeError`` for bad JSON); the caller counts the rejection.
    """
    envelope = _ENVELOPE.decode(payload)
    if envelope.data:
        return Wrapped(decoder(kind).decode(envelope.data), envelope.action)
    return Wrapped(decoder(kind).decode(payload))
