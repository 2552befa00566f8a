"""ProjectX Gateway wire schemas (hub payloads and REST bodies).

camelCase is renamed at this edge only (``rename="camel"``); inside pxnode every
field is snake_case. Unknown fields are ignored (msgspec's default), so a gateway
that adds fields never breaks us. One Decoder per type, built once and reused
(``decoder(T)``), one Encoder for all (``ENCODER``). Subclasses repeat
``frozen=True`` only because mypy's dataclass_transform does not inherit it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
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


class DomType(enum.IntEnum):
    """``type`` of a GatewayDepth item. RESET clears the whole book (its price is 0 or
    null and means nothing); a level of volume 0 is deleted."""

    UNKNOWN = 0
    ASK = 1
    BID = 2
    BEST_ASK = 3
    BEST_BID = 4
    TRADE = 5
    RESET = 6
    LOW = 7
    HIGH = 8
    NEW_BEST_BID = 9
    NEW_BEST_ASK = 10
    FILL = 11


class DepthItem(Wire, frozen=True):
    """One GatewayDepth item; ``type`` is a ``DomType``."""

    timestamp: str
    type: int
    price: float
    volume: int
    current_volume: int


TRADE_ARGS = msgspec.json.Decoder(tuple[str, list[TradeItem] | TradeItem])
"""A whole GatewayTrade arguments array, every field of its items."""


class TradeTick(Wire, frozen=True, gc=False):
    """What validation reads of a ``TradeItem``: its symbolId is skipped, never decoded."""

    price: float
    timestamp: str
    type: int
    volume: int


TRADE_TICKS = msgspec.json.Decoder(tuple[str, list[TradeTick] | TradeTick])
"""Validation's fast path for a GatewayTrade arguments array (one string fewer per item
than ``TRADE_ARGS``); on failure it judges item by item."""

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

    Payload fields of the subclasses are optional and nullable: the gateway
    answers a failure as ``{"success": false, "errorCode": 1, "errorMessage":
    null, "bars": null}``, and that must decode to be judged (``describe_error``).
    """

    success: bool = True
    error_code: int = 0
    error_message: str | None = None


ERROR_CODES: dict[str, dict[int, str]] = {
    "Auth/loginKey": {
        1: "UserNotFound",
        2: "PasswordVerificationFailed",
        3: "InvalidCredentials",
        4: "AppNotFound",
        5: "AppVerificationFailed",
        6: "InvalidDevice",
        7: "AgreementsNotSigned",
        8: "UnknownError",
        9: "ApiSubscriptionNotFound",
        10: "ApiKeyAuthenticationDisabled",
    },
    "Auth/validate": {
        1: "InvalidSession",
        2: "SessionNotFound",
        3: "ExpiredToken",
        4: "UnknownError",
    },
    "Auth/logout": {1: "InvalidSession", 2: "UnknownError"},
    "Contract/searchById": {1: "ContractNotFound"},
    "History/retrieveBars": {
        1: "ContractNotFound",
        2: "UnitInvalid",
        3: "UnitNumberInvalid",
        4: "LimitInvalid",
    },
    "Order/search": {1: "AccountNotFound"},
    "Order/searchOpen": {1: "AccountNotFound"},
    "Position/searchOpen": {1: "AccountNotFound"},
    "Trade/search": {1: "AccountNotFound"},
}
"""The gateway's error codes per endpoint (they are not comparable across endpoints)."""


def describe_error(path: str, answer: RestResponse, clean: Callable[[str], str] = str) -> str:
    """A ``success: false`` answer as one line: endpoint, code, its name, the message if any.

    ``clean`` redacts what the message may echo (a token, a key).
    """
    endpoint = path.removeprefix("/api/")
    name = ERROR_CODES.get(endpoint, {}).get(answer.error_code, "")
    line = f"{endpoint} refused: errorCode {answer.error_code}" + (f" ({name})" if name else "")
    if answer.error_message:
        line += f": {clean(answer.error_message)[:200]}"
    return line


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
    accounts: list[Account] | None = None


class Contract(Wire, frozen=True):
    """A contract as Contract/search answers it; the gateway's own documented answers
    carry no ``symbolId``, so it may be missing (empty)."""

    id: str
    name: str
    description: str
    tick_size: float
    tick_value: float
    active_contract: bool
    symbol_id: str = ""


class ContractSearchRequest(RestRequest, frozen=True):
    search_text: str
    live: bool = False


class ContractSearchResponse(RestResponse, frozen=True):
    """Answer of ``Contract/search`` and of ``Contract/available``."""

    contracts: list[Contract] | None = None


class ContractSearchByIdRequest(RestRequest, frozen=True):
    contract_id: str


class ContractSearchByIdResponse(RestResponse, frozen=True):
    """The SDKs read ``contract``; the gateway's docs show a ``contracts`` list: both are read."""

    contract: Contract | None = None
    contracts: list[Contract] | None = None

    def find(self, contract_id: str) -> Contract | None:
        """The answer's contract of that id, in whichever shape it came."""
        if self.contract is not None and self.contract.id == contract_id:
            return self.contract
        return next((c for c in self.contracts or () if c.id == contract_id), None)


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

    bars: list[HistoryBar] | None = None


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
    """``start_timestamp`` is required by the gateway (ISO 8601)."""

    account_id: int
    start_timestamp: str
    end_timestamp: str | None = None


class OpenOrderSearchRequest(RestRequest, frozen=True):
    account_id: int


class OrderSearchResponse(RestResponse, frozen=True):
    """Answer of ``Order/search`` and of ``Order/searchOpen``."""

    orders: list[Order] | None = None


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
    positions: list[Position] | None = None


class TradeRecord(Wire, frozen=True):
    """A fill of the account. ``profit_and_loss`` is null for a half-turn, and the user
    hub leaves a null field out altogether (an opening fill has no such key)."""

    id: int
    account_id: int
    contract_id: str
    creation_timestamp: str
    price: float
    fees: float
    side: int
    size: int
    voided: bool
    order_id: int
    profit_and_loss: float | None = None


class TradeSearchRequest(RestRequest, frozen=True):
    account_id: int
    start_timestamp: str
    end_timestamp: str | None = None


class TradeSearchResponse(RestResponse, frozen=True):
    trades: list[TradeRecord] | None = None


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
