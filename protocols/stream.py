"""The published stream: pxnode's validated data as JSON messages on NATS subjects.

One message per accepted trade, quote and depth update and per bar event, so a
consumer in any language reads plain JSON with ``"kind"`` telling the shape:

============  ==================================  =========================================
subject       payload                             id (``Nats-Msg-Id``)
============  ==================================  =========================================
px.trade.C    StreamTrade  ``{"kind":"trade"}``   the trade, its frame and its ordinal in it
px.quote.C    StreamQuote  ``{"kind":"quote"}``   the quote and its frame
px.depth.C    StreamDepth  ``{"kind":"depth"}``   the update and its frame
px.bar.TF.C   StreamBar    ``{"kind":"bar"}``     the bar's whole state and the event
============  ==================================  =========================================

``C`` is the contract id with its dots kept as subject tokens (``px.trade.CON.F.US.EP.Z25``,
so ``px.trade.CON.F.US.EP.>`` selects every expiry of one product) and any character a
subject cannot hold replaced by ``_``. Times are ISO 8601 UTC with microseconds
(``ts``, ``start``) except ``received_at``, the node's receive time in unix seconds,
which a consumer needs to judge the stream exactly as the ingest node did.

Ids are derived from content, never from a counter of one process: the same
trade published again — after a reconnect, a restart, or by a second replay of
the same tape — carries the same id, and JetStream's duplicate window drops it.
Two identical trades in one frame differ by their ordinal.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

from .messages import Bar, DepthAccepted, QuoteAccepted, Trade

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


BarEvent = Literal["updated", "closed", "corrected"]


class StreamMessage(msgspec.Struct, frozen=True, tag_field="kind", omit_defaults=True):
    """Base of the stream's payloads."""


class StreamTrade(StreamMessage, frozen=True, tag="trade"):
    contract: str
    ts: str
    price: float
    volume: int
    side: int
    """0 buy (at the ask), 1 sell (at the bid), as the gateway's ``type``."""
    received_at: float


class StreamQuote(StreamMessage, frozen=True, tag="quote"):
    contract: str
    ts: str
    received_at: float
    last: float | None = None
    bid: float | None = None
    ask: float | None = None
    volume: int | None = None


class StreamLevel(msgspec.Struct, frozen=True):
    ts: str
    type: int
    """The gateway's DomType (1 ask, 2 bid, ..., 6 reset)."""
    price: float
    volume: int
    current_volume: int


class StreamDepth(StreamMessage, frozen=True, tag="depth"):
    contract: str
    received_at: float
    levels: list[StreamLevel]


class StreamBar(StreamMessage, frozen=True, tag="bar"):
    event: BarEvent
    """``updated`` (the forming bar changed), ``closed``, or ``corrected`` (a late trade
    amended a bar already closed: its new final state)."""
    contract: str
    timeframe: str
    start: str
    open: float
    high: float
    low: float
    close: float
    volume: int
    trades: int
    source: str


StreamPayload = StreamTrade | StreamQuote | StreamDepth | StreamBar

ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(StreamPayload)
TRADE_DECODER = msgspec.json.Decoder(StreamTrade)


def iso_us(us: int) -> str:
    """Microseconds since the epoch as ISO 8601 UTC with all six digits (exact both ways)."""
    moment = _EPOCH + timedelta(microseconds=us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def subject_tokens(contract: str) -> str:
    """``contract`` as subject tokens: dots kept, anything else unsafe becomes ``_``."""
    return ".".join(_UNSAFE.sub("_", token) or "_" for token in contract.split("."))


def trade_subject(contract: str) -> str:
    return f"px.trade.{subject_tokens(contract)}"


def quote_subject(contract: str) -> str:
    return f"px.quote.{subject_tokens(contract)}"


def depth_subject(contract: str) -> str:
    return f"px.depth.{subject_tokens(contract)}"


def bar_subject(timeframe: str, contract: str) -> str:
    return f"px.bar.{subject_tokens(timeframe)}.{subject_tokens(contract)}"


def message_id(*parts: object) -> str:
    """A short id of ``parts`` (their reprs, so 1.0 and 1 differ as they do on the wire)."""
    text = "|".join(map(repr, parts))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def stream_trade(trade: Trade) -> StreamTrade:
    return StreamTrade(
        trade.contract, iso_us(trade.ts), trade.price, trade.volume, trade.side, trade.received_at
    )


def stream_quote(quote: QuoteAccepted) -> StreamQuote:
    return StreamQuote(
        quote.contract,
        iso_us(quote.ts),
        quote.received_at,
        quote.last,
        quote.bid,
        quote.ask,
        quote.volume,
    )


def stream_depth(depth: DepthAccepted) -> StreamDepth:
    levels = [
        StreamLevel(iso_us(lv.ts), lv.type, lv.price, lv.volume, lv.current_volume)
        for lv in depth.levels
    ]
    return StreamDepth(depth.contract, depth.received_at, levels)


def stream_bar(bar: Bar, event: BarEvent) -> StreamBar:
    return StreamBar(
        event,
        bar.contract,
        bar.timeframe,
        iso_us(bar.start),
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
        bar.trades,
        bar.source,
    )
