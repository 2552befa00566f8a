"""Validation: the one gate between the raw gateway feed and everything that trusts it.

Theory of operation
-------------------
Raw hub invocations (``HubMessageReceived``, or several at once in a
``HubMessagesReceived``, as replay sends them) arrive in batches. Each market
frame is ``[contractId, payload]``; every item of its payload is judged alone,
in arrival order, and the first failing rule names the reason:

===== ========================================= ==================================
kind  rules, in order                           state per contract
===== ========================================= ==================================
trade price volume timestamp future too_old     newest accepted ts, last accepted
      stale spike                               price
quote price volume crossed timestamp future     newest accepted ts
      too_old stale
depth price volume type timestamp future        newest accepted ts
      too_old stale
===== ========================================= ==================================

An item that is not a JSON object is ``malformed``. Only *accepted* items move
the per-contract state, so one bad tick can never poison the next good one.
A frame that is not ``[non-empty string, payload]``, or names an unknown target,
is counted under ``frames_*`` and skipped.

Each frame is first decoded with the typed msgspec decoder (the fast path). If
that fails -- one bad item fails the whole frame -- the arguments are decoded
as plain JSON and every item is *sanitised* into the same typed item, an
invalid field replaced by a sentinel that fails exactly that field's rule (a
NaN price, a zero/negative volume, an empty timestamp). So both paths share one
judging loop and cannot disagree.

Value rules: a price is a JSON number (not a bool), finite and > 0; a volume
is a JSON *integer* (``1.0`` is not one) that fits in int64 -- trades need
>= 1, quote/depth volumes >= 0; a side (trade ``type``) that is not an integer
is kept as -1 rather than dropping a good print; a depth ``type`` must be an
integer >= 0 (a level without a side cannot be placed).

Time rules: every time is an integer of microseconds since the epoch, so the
thresholds are exact: exactly ``max_future``, ``max_age`` or ``stale_after``
passes, one microsecond more is rejected. The receive time is rounded to the
microsecond. The spike rule compares the relative deviation in floats and
settles the rare near-boundary case exactly on the decimals as written, so
100 -> 150 passes at 50 % and 0.3 -> 0.45 does too.

Out: accepted trades of a batch go as one ``TradesAccepted`` to ``bars`` and
``topic.trades`` (awaited: backpressure, never a lost accepted trade); accepted
quotes of a batch as one ``QuotesAccepted`` to ``topic.quotes``; depth one
``DepthAccepted`` per frame to ``topic.depth``; user-hub frames unchanged to
``topic.user``. A batch of ``HubMessagesReceived`` is sent every ``batch_limit``
frames, so downstream messages stay as large as with one message per frame.
Cumulative counters go to ``stats`` every ``report_every`` batches, on Tick,
on Stop and when the inbox closes; an asked ``Flush`` is answered with them
once everything queued before it has been told downstream (a barrier).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, TypeVar

import anyio
import msgspec

from protocols.errors import ConfigError, MailboxClosed, MailboxFull
from protocols.gateway import DEPTH_ARGS, QUOTE_ARGS, TRADE_ARGS, DepthItem, QuoteItem, TradeItem
from protocols.interfaces import ActorContext, Inbox, Ref
from protocols.messages import (
    ContractSummary,
    CountersReported,
    DepthAccepted,
    DepthLevel,
    Flush,
    GetContracts,
    HubMessageReceived,
    HubMessagesReceived,
    QuoteAccepted,
    QuotesAccepted,
    Request,
    Stop,
    Tick,
    Trade,
    TradesAccepted,
)
from protocols.timestamps import TimestampParser

T = TypeVar("T")

I64_MAX = 2**63 - 1
_INF = math.inf
_NAN = math.nan
_USER_TARGETS = frozenset(
    {"GatewayUserAccount", "GatewayUserOrder", "GatewayUserPosition", "GatewayUserTrade"}
)
_USER_ARGS = msgspec.json.Decoder(list[msgspec.Raw])

# Rule order per kind (the first failing rule names the reason); "malformed" is a non-object item.
_TIME_RULES = ("timestamp", "future", "too_old", "stale")
TRADE_REASONS = ("price", "volume", *_TIME_RULES, "spike", "malformed")
QUOTE_REASONS = ("price", "volume", "crossed", *_TIME_RULES, "malformed")
DEPTH_REASONS = ("price", "volume", "type", *_TIME_RULES, "malformed")


class ValidationConfig(msgspec.Struct, frozen=True):
    """Thresholds of the validation rules (DESIGN §4); every limit is inclusive."""

    max_future: float = 5.0
    """Seconds a timestamp may lie after the receive time (exchange/host clock skew)."""
    max_age: float = 86_400.0
    """Seconds a timestamp may lie before the receive time (older is a replayed or stuck feed)."""
    stale_after: float = 60.0
    """Seconds an item may be older than the newest accepted one of its contract."""
    max_spike: float = 0.5
    """Largest relative move from the last accepted trade price (0.5 = 50 %)."""
    batch_limit: int = 1024
    """Most messages drained from the inbox per batch (one TradesAccepted, QuotesAccepted each)."""
    report_every: int = 100
    """Batches between two counter reports to ``stats`` (Tick and Stop report too)."""

    def __post_init__(self) -> None:
        for name in ("max_future", "max_age", "stale_after", "max_spike"):
            value = getattr(self, name)
            if not 0.0 <= value < _INF:
                raise ConfigError(f"validation.{name} must be a finite number >= 0, got {value}")
        if self.batch_limit < 1 or self.report_every < 1:
            raise ConfigError("validation.batch_limit and report_every must be >= 1")


def _spike_exceeds(price: float, last: float, limit: float) -> bool:
    """Settle a near-boundary spike exactly, on the decimals as written (``repr``)."""
    return abs(Fraction(repr(price)) / Fraction(repr(last)) - 1) > Fraction(repr(limit))


# ---------------------------------------------------------- sanitising fallback


def _loads(raw: Any) -> Any:
    """Plain JSON, ``NaN``/``Infinity`` allowed so they are judged, not fatal; else ``_BAD``."""
    try:
        return json.loads(bytes(raw))
    except (ValueError, TypeError, RecursionError):
        return _BAD


_BAD = object()


def _price(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            return _NAN
    return _NAN


def _optional_price(value: Any) -> float | None:
    return None if value is None else _price(value)


def _count(value: Any) -> int:
    return value if type(value) is int else -1


def _text(value: Any) -> str:
    return value if type(value) is str else ""


def _fallback(
    raw: Any, counts: dict[str, int], kind: str, sanitise: Callable[[dict[str, Any]], T]
) -> tuple[str, list[T]] | None:
    """The slow path: ``[contract, payload]`` as plain JSON, each object item sanitised.

    Items that are not objects are counted as ``<kind>_rejected.malformed``; a
    frame of the wrong shape gives None (the caller counts it).
    """
    args = _loads(raw)
    if type(args) is not list or len(args) != 2 or type(args[0]) is not str or not args[0]:
        return None
    payload = args[1]
    items: list[T] = []
    for item in payload if type(payload) is list else [payload]:
        if type(item) is dict:
            items.append(sanitise(item))
        else:
            counts[f"{kind}_rejected.malformed"] += 1
    return args[0], items


# ----------------------------------------------------------------------- actor


class _Outbox:
    """What the current batch let through, per destination, until ``send`` tells it.

    Accepted trades go as one ``TradesAccepted``, told with a plain (awaited)
    ``tell``: a scheduling point per batch, so the consumers drain between two
    batches. Quotes go as one ``QuotesAccepted``, depth and user frames one
    message each; these are told without a scheduling point while their mailbox
    has room: an awaited tell yields, and every yield would wake a consumer for
    a single message.
    """

    __slots__ = ("_refs", "depth", "quotes", "trades", "user")

    def __init__(self, ctx: ActorContext) -> None:
        self._refs = tuple(
            ctx.ref(name)
            for name in ("bars", "topic.trades", "topic.quotes", "topic.depth", "topic.user")
        )
        self.trades: list[Trade] = []
        self.quotes: list[QuoteAccepted] = []
        self.depth: list[DepthAccepted] = []
        self.user: list[HubMessageReceived] = []

    async def send(self) -> None:
        bars, trades_topic, quotes_topic, depth_topic, user_topic = self._refs
        if self.trades:
            accepted = TradesAccepted(trades=self.trades)
            self.trades = []
            await bars.tell(accepted)
            await trades_topic.tell(accepted)
        if self.quotes:
            quotes = QuotesAccepted(quotes=self.quotes)
            self.quotes = []
            await _tell(quotes_topic, quotes)
        for depth in self.depth:
            await _tell(depth_topic, depth)
        self.depth.clear()
        for frame in self.user:
            await _tell(user_topic, frame)
        self.user.clear()


async def _tell(ref: Ref[Any], msg: Any) -> None:
    """Awaits only when the mailbox is full: backpressure, but no yield per message."""
    try:
        ref.tell_nowait(msg)
    except anyio.WouldBlock:
        await ref.tell(msg)


class ValidationActor:
    """Judges every trade, quote and depth item; forwards the accepted, counts the rest."""

    def __init__(self, config: ValidationConfig | None = None) -> None:
        self.config = config = config or ValidationConfig()
        # (max_future µs, max_age µs, stale_after µs, spike band low, high): floats settle a
        # spike outside the band, _spike_exceeds decides inside it, exactly.
        self._limits = (
            round(config.max_future * 1_000_000),
            round(config.max_age * 1_000_000),
            round(config.stale_after * 1_000_000),
            config.max_spike * (1 - 1e-9),
            config.max_spike * (1 + 1e-9),
        )
        self._timestamps = TimestampParser()
        # contract -> [newest accepted ts, last accepted price, accepted trades]
        self._trade_state: dict[str, list[Any]] = {}
        self._quote_newest: dict[str, int] = {}
        self._depth_newest: dict[str, int] = {}
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "frames_received",
                "frames_malformed",
                "frames_unknown_target",
                "trades_accepted",
                *(f"trades_rejected.{r}" for r in TRADE_REASONS),
                "quotes_accepted",
                *(f"quotes_rejected.{r}" for r in QUOTE_REASONS),
                "depth_accepted",
                *(f"depth_rejected.{r}" for r in DEPTH_REASONS),
                "user_forwarded",
                "messages_ignored",
                "reports_dropped",
            ),
            0,
        )

    def counters(self) -> dict[str, int]:
        """Cumulative counters since start (a copy)."""
        return dict(self._counts)

    # --------------------------------------------------------------- the loop

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        stats = ctx.ref("stats")
        limit, report_every = self.config.batch_limit, self.config.report_every
        out = _Outbox(ctx)
        batches = 0
        flushes: list[Any] = []  # reply refs of Flush barriers, answered once the batch is out
        while batch := await inbox.receive_batch(limit):
            frames = 0  # judged since the last send: a batch of HubMessagesReceived is split
            report = stop = False
            for msg in batch:
                if isinstance(msg, HubMessageReceived):
                    self.on_hub_message(msg, out.trades, out.quotes, out.depth, out.user)
                    frames += 1
                elif isinstance(msg, HubMessagesReceived):
                    frames += self.on_hub_messages(msg, out.trades, out.quotes, out.depth, out.user)
                    if frames >= limit:
                        await out.send()
                        frames = 0
                elif isinstance(msg, Tick):
                    report = True
                elif isinstance(msg, Request) and isinstance(msg.body, Flush):
                    flushes.append(msg.reply)
                elif isinstance(msg, Request) and isinstance(msg.body, GetContracts):
                    msg.reply.tell_nowait(self.contracts())
                elif isinstance(msg, Stop):
                    stop = True
                    break
                else:
                    self._counts["messages_ignored"] += 1
            await out.send()
            for reply in flushes:
                reply.tell_nowait(self.counters())
            flushes.clear()
            if batches == 0:
                ctx.report_healthy()
            batches += 1
            if stop:
                break
            if report or batches % report_every == 0:
                self._report(stats)
        self._report(stats)

    def contracts(self) -> dict[str, ContractSummary]:
        """Last accepted price and accepted trade count of every contract seen."""
        return {
            contract: ContractSummary(last_price=state[1], trades=state[2])
            for contract, state in self._trade_state.items()
        }

    def _report(self, stats: Ref[Any]) -> None:
        # Reports are cumulative: a dropped one loses nothing the next one carries.
        try:
            stats.tell_nowait(CountersReported(source="validation", counters=self.counters()))
        except (anyio.WouldBlock, MailboxFull, MailboxClosed):
            self._counts["reports_dropped"] += 1

    # ------------------------------------------------------------- dispatch

    def on_hub_messages(
        self,
        msg: HubMessagesReceived,
        trades: list[Trade],
        quotes: list[QuoteAccepted],
        depth: list[DepthAccepted],
        user: list[HubMessageReceived],
    ) -> int:
        """Judge each frame of ``msg`` in order (a non-frame is ignored); returns how many."""
        frames: object = msg.messages
        if type(frames) is not list:
            self._counts["messages_ignored"] += 1
            return 0
        on_hub_message = self.on_hub_message
        for frame in frames:
            if type(frame) is HubMessageReceived:
                on_hub_message(frame, trades, quotes, depth, user)
            else:
                self._counts["messages_ignored"] += 1
        return len(frames)

    def on_hub_message(
        self,
        msg: HubMessageReceived,
        trades: list[Trade],
        quotes: list[QuoteAccepted],
        depth: list[DepthAccepted],
        user: list[HubMessageReceived],
    ) -> None:
        """Judge one hub frame, appending what passes to the per-destination lists."""
        counts = self._counts
        counts["frames_received"] += 1
        try:
            received_us = round(msg.received_at * 1_000_000)
        except (TypeError, ValueError, OverflowError):
            counts["frames_malformed"] += 1
            return
        hub: str = msg.hub  # a str, not the Literal: a Struct built in code is not validated
        target = msg.target
        if hub == "market":
            if target == "GatewayTrade":
                self.on_trade_frame(msg, received_us, trades)
            elif target == "GatewayQuote":
                self.on_quote_frame(msg, received_us, quotes)
            elif target == "GatewayDepth":
                self.on_depth_frame(msg, received_us, depth)
            else:
                counts["frames_unknown_target"] += 1
        elif hub == "user":
            if target not in _USER_TARGETS:
                counts["frames_unknown_target"] += 1
                return
            try:
                arity = len(_USER_ARGS.decode(msg.arguments))
            except (msgspec.DecodeError, TypeError):
                arity = 0
            if arity in (1, 2):
                counts["user_forwarded"] += 1
                user.append(msg)
            else:
                counts["frames_malformed"] += 1
        else:
            counts["frames_malformed"] += 1

    def _frame(
        self,
        arguments: Any,
        decoder: msgspec.json.Decoder[Any],
        kind: str,
        sanitise: Callable[[dict[str, Any]], T],
    ) -> tuple[str, Sequence[T]] | None:
        """``[contract, payload]`` as the contract and its items; None (counted) if no frame.

        The typed decoder first; one bad item fails it, and then the sanitising
        fallback judges what it can (see the module docstring).
        """
        try:
            contract, payload = decoder.decode(arguments)
        except (msgspec.DecodeError, TypeError):
            frame = _fallback(arguments, self._counts, kind, sanitise)
        else:
            frame = contract, payload if type(payload) is list else [payload]
        if frame is None or not frame[0]:
            self._counts["frames_malformed"] += 1
            return None
        return frame

    # ---------------------------------------------------------------- trades

    def on_trade_frame(self, msg: HubMessageReceived, received_us: int, out: list[Trade]) -> None:
        # The hot loop: everything it touches is a local; one dict write per rejection.
        frame = self._frame(msg.arguments, TRADE_ARGS, "trades", _sanitised_trade)
        if frame is None:
            return
        contract, items = frame
        counts = self._counts
        parse, received_at = self._timestamps.parse, msg.received_at
        max_future, max_age, stale, spike_low, spike_high = self._limits
        latest, earliest = received_us + max_future, received_us - max_age
        state = self._trade_state.get(contract)
        append = out.append
        accepted = 0
        for item in items:
            price = item.price
            if not 0.0 < price < _INF:
                reason = "trades_rejected.price"
            elif not 0 < (volume := item.volume) <= I64_MAX:
                reason = "trades_rejected.volume"
            elif (ts := parse(item.timestamp)) is None:
                reason = "trades_rejected.timestamp"
            elif ts > latest:
                reason = "trades_rejected.future"
            elif ts < earliest:
                reason = "trades_rejected.too_old"
            elif state is None:
                state = self._trade_state[contract] = [ts, price, 0]
                append(Trade(contract, ts, price, volume, item.type, received_at))
                accepted += 1
                continue
            elif ts < state[0] - stale:
                reason = "trades_rejected.stale"
            elif (deviation := abs(price / state[1] - 1.0)) > spike_low and (
                deviation > spike_high or _spike_exceeds(price, state[1], self.config.max_spike)
            ):
                reason = "trades_rejected.spike"
            else:
                if ts > state[0]:
                    state[0] = ts
                state[1] = price
                append(Trade(contract, ts, price, volume, item.type, received_at))
                accepted += 1
                continue
            counts[reason] += 1
        if accepted:
            counts["trades_accepted"] += accepted
            state[2] += accepted  # type: ignore[index]  # accepted > 0: state exists

    # ---------------------------------------------------------------- quotes

    def on_quote_frame(
        self, msg: HubMessageReceived, received_us: int, out: list[QuoteAccepted]
    ) -> None:
        frame = self._frame(msg.arguments, QUOTE_ARGS, "quotes", _sanitised_quote)
        if frame is None:
            return
        contract, items = frame
        counts, newest = self._counts, self._quote_newest
        for quote in items:
            last, bid, ask, volume = quote.last_price, quote.best_bid, quote.best_ask, quote.volume
            text = quote.timestamp if quote.timestamp is not None else quote.last_updated
            stamp: int | str
            if any(p is not None and not 0.0 < p < _INF for p in (last, bid, ask)):
                stamp = "quotes_rejected.price"
            elif volume is not None and not 0 <= volume <= I64_MAX:
                stamp = "quotes_rejected.volume"
            elif bid is not None and ask is not None and bid > ask:
                stamp = "quotes_rejected.crossed"
            else:
                stamp = self._stamp("quotes", text, received_us, newest.get(contract))
            if isinstance(stamp, str):
                counts[stamp] += 1
                continue
            newest[contract] = max(stamp, newest.get(contract, stamp))
            counts["quotes_accepted"] += 1
            out.append(
                QuoteAccepted(
                    contract=contract,
                    ts=stamp,
                    received_at=msg.received_at,
                    last=last,
                    bid=bid,
                    ask=ask,
                    volume=volume,
                )
            )

    # ----------------------------------------------------------------- depth

    def on_depth_frame(
        self, msg: HubMessageReceived, received_us: int, out: list[DepthAccepted]
    ) -> None:
        frame = self._frame(msg.arguments, DEPTH_ARGS, "depth", _sanitised_depth)
        if frame is None:
            return
        contract, items = frame
        counts = self._counts
        levels: list[DepthLevel] = []
        newest = self._depth_newest.get(contract)
        for item in items:
            stamp: int | str
            if not 0.0 < item.price < _INF:
                stamp = "depth_rejected.price"
            elif not (0 <= item.volume <= I64_MAX and 0 <= item.current_volume <= I64_MAX):
                stamp = "depth_rejected.volume"
            elif item.type < 0:
                stamp = "depth_rejected.type"
            else:
                stamp = self._stamp("depth", item.timestamp, received_us, newest)
            if isinstance(stamp, str):
                counts[stamp] += 1
                continue
            newest = stamp if newest is None else max(newest, stamp)
            levels.append(
                DepthLevel(stamp, item.type, item.price, item.volume, item.current_volume)
            )
        if levels:
            assert newest is not None  # an accepted level set it
            self._depth_newest[contract] = newest
            counts["depth_accepted"] += len(levels)
            out.append(DepthAccepted(contract=contract, received_at=msg.received_at, levels=levels))

    def _stamp(
        self, kind: str, text: str | None, received_us: int, newest: int | None
    ) -> int | str:
        """The time rules for quotes and depth: the item's ts, or the failing rule's counter key."""
        max_future, max_age, stale = self._limits[:3]
        ts = None if text is None else self._timestamps.parse(text)
        if ts is None:
            return f"{kind}_rejected.timestamp"
        if ts > received_us + max_future:
            return f"{kind}_rejected.future"
        if ts < received_us - max_age:
            return f"{kind}_rejected.too_old"
        if newest is not None and ts < newest - stale:
            return f"{kind}_rejected.stale"
        return ts


def _sanitised_trade(raw: dict[str, Any]) -> TradeItem:
    return TradeItem(
        symbol_id="",
        price=_price(raw.get("price")),
        timestamp=_text(raw.get("timestamp")),
        type=_count(raw.get("type")),
        volume=_count(raw.get("volume")),
    )


def _sanitised_quote(raw: dict[str, Any]) -> QuoteItem:
    def optional_text(value: Any) -> str | None:
        return None if value is None else _text(value)

    volume = raw.get("volume")
    return QuoteItem(
        last_price=_optional_price(raw.get("lastPrice")),
        best_bid=_optional_price(raw.get("bestBid")),
        best_ask=_optional_price(raw.get("bestAsk")),
        volume=None if volume is None else _count(volume),
        last_updated=optional_text(raw.get("lastUpdated")),
        timestamp=optional_text(raw.get("timestamp")),
    )


def _sanitised_depth(raw: dict[str, Any]) -> DepthItem:
    return DepthItem(
        timestamp=_text(raw.get("timestamp")),
        type=_count(raw.get("type")),
        price=_price(raw.get("price")),
        volume=_count(raw.get("volume")),
        current_volume=_count(raw.get("currentVolume")),
    )
