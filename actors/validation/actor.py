"""The validation actor: drains its inbox in batches and judges every frame of a batch.

Trades come first: a batch's trade frames are judged and told to ``bars`` before
its quotes, depth and user frames are judged, and the actor yields in between,
so a trade's way to its bar never waits for the judging of the book around it.
Each kind keeps its arrival order and its verdicts (no rule looks across kinds),
and downstream a batch's trades still come before its quotes and depth.
A batch of ``HubMessagesReceived`` is sent on every ``batch_limit`` frames, so
downstream messages stay as large as with one message per frame (``outbox``).
Cumulative counters go to ``stats`` every ``report_every`` batches, on Tick,
on Stop and when the inbox closes; an asked ``Flush`` is answered with them
once everything queued before it has been told downstream (a barrier).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, TypeVar

import anyio.lowlevel
import msgspec

from protocols.gateway import DEPTH_ARGS, QUOTE_ARGS, TRADE_TICKS
from protocols.hubs import USER_EVENTS
from protocols.interfaces import ActorContext, Inbox, Ref
from protocols.messages import (
    I64_MAX,
    ContractSummary,
    CountersReported,
    DepthAccepted,
    Flush,
    GetContracts,
    HubMessageReceived,
    HubMessagesReceived,
    QuoteAccepted,
    Request,
    Stop,
    Tick,
    Trade,
)
from protocols.timestamps import MAX_AGE_S, MAX_FUTURE_S, TimestampParser

from .book import BookJudge
from .config import DEPTH_REASONS, QUOTE_REASONS, TRADE_REASONS, ValidationConfig
from .fallback import fallback, sanitised_depth, sanitised_quote, sanitised_trade, spike_exceeds
from .outbox import Outbox

T = TypeVar("T")

_INF = math.inf
_NAN = math.nan
_USER_TARGETS = frozenset(USER_EVENTS)
_USER_ARGS = msgspec.json.Decoder(list[msgspec.Raw])


def _is_trade(frame: HubMessageReceived) -> bool:
    return frame.target == "GatewayTrade" and frame.hub == "market"


class ValidationActor:
    """Judges every trade, quote and depth item; forwards the accepted, counts the rest."""

    def __init__(
        self,
        config: ValidationConfig | None = None,
        subscribed: AbstractSet[str] | None = None,
        *,
        judged_upstream: bool = False,
    ) -> None:
        """``subscribed``: a live node's contracts, the only ones admitted (read live, so a
        contract subscribed later counts); None admits any contract up to the cap (replay).

        ``judged_upstream``: the trades were accepted by another node (the NATS stream a
        consumer reads, a ``replay --nats``). Their shape is judged (a foreign message may
        stand among them) and their staleness, which keeps this node's rings and replay
        output exact; ``spike`` not, and ``future`` and ``too_old`` only at the widest any
        config allows: those were the accepting node's to apply, with its limits and its
        last price, which restarts with it (a consumer running through an ingest restart
        across a gap would reject every later trade as a spike)."""
        self.config = config = config or ValidationConfig()
        # Every per-contract map below is keyed only by admitted contracts: the
        # subscribed ones, or at most max_contracts (see _admits).
        self._subscribed = subscribed
        self._admitted: set[str] = set()
        # (max_future µs, max_age µs, stale_after µs, spike band low, high): floats settle a
        # spike outside the band, spike_exceeds decides inside it, exactly.
        self._limits = (
            round((MAX_FUTURE_S if judged_upstream else config.max_future) * 1_000_000),
            round((MAX_AGE_S if judged_upstream else config.max_age) * 1_000_000),
            round(config.stale_after * 1_000_000),
            _INF if judged_upstream else config.max_spike * (1 - 1e-9),
            _INF if judged_upstream else config.max_spike * (1 + 1e-9),
        )
        self._timestamps = TimestampParser()
        # contract -> [newest accepted ts, last accepted price, accepted trades]
        self._trade_state: dict[str, list[Any]] = {}
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "frames_received",
                "frames_malformed",
                "frames_unknown_target",
                "frames_unsubscribed",
                "frames_over_contract_cap",
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
        self._book = BookJudge(self._counts, self._limits[:3], self._timestamps)

    def counters(self) -> dict[str, int]:
        """Cumulative counters since start (a copy)."""
        return dict(self._counts)

    # --------------------------------------------------------------- the loop

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        stats = ctx.ref("stats")
        limit, report_every = self.config.batch_limit, self.config.report_every
        out = Outbox(ctx)
        batches = 0
        flushes: list[Any] = []  # reply refs of Flush barriers, answered once the batch is out
        while batch := await inbox.receive_batch(limit):
            frames = 0  # judged since the last send: a batch of HubMessagesReceived is split
            report = stop = False
            later: list[Any] = []  # what is not a trade frame, judged once the trades are out
            for msg in batch:
                if isinstance(msg, HubMessageReceived):
                    if _is_trade(msg):
                        self.on_hub_message(msg, out.trades, out.quotes, out.depth, out.user)
                    else:
                        later.append(msg)
                    frames += 1
                elif isinstance(msg, HubMessagesReceived):
                    frames += self.on_hub_messages(
                        msg, out.trades, out.quotes, out.depth, out.user, later
                    )
                    if frames >= limit:
                        await out.send()
                        frames = 0
                elif isinstance(msg, Tick):
                    report = True
                elif isinstance(msg, Request) and isinstance(msg.body, Flush):
                    flushes.append(msg.reply)
                    report = True  # a barrier's asker (a tape's end) reads the stats next
                elif isinstance(msg, Request) and isinstance(msg.body, GetContracts):
                    msg.reply.tell_nowait(self.contracts())
                elif isinstance(msg, Stop):
                    stop = True
                    break
                else:
                    self._counts["messages_ignored"] += 1
            if later:
                await self._judge_later(later, out, limit)
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

    async def _judge_later(self, later: list[Any], out: Outbox, limit: int) -> None:
        """Tell the trades judged so far and let their consumers run, then judge ``later``.

        Two yields: trio runs a batch of ready tasks in either order, so after
        the first one bars may still be waiting behind us; after the second it
        has run (asyncio runs them in order: the first is enough).
        """
        if out.trades:
            await out.send()
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
        for start in range(0, len(later), limit):
            if start:
                await out.send()
            chunk = HubMessagesReceived(later[start : start + limit])
            self.on_hub_messages(chunk, out.trades, out.quotes, out.depth, out.user)

    def contracts(self) -> dict[str, ContractSummary]:
        """Last accepted price and accepted trade count of every contract seen."""
        return {
            contract: ContractSummary(last_price=state[1], trades=state[2])
            for contract, state in self._trade_state.items()
        }

    def _report(self, stats: Ref[Any]) -> None:
        # Reports are cumulative: a dropped one loses nothing the next one carries.
        if not stats.try_tell(CountersReported(source="validation", counters=self.counters())):
            self._counts["reports_dropped"] += 1

    # ------------------------------------------------------------- dispatch

    def on_hub_messages(
        self,
        msg: HubMessagesReceived,
        trades: list[Trade],
        quotes: list[QuoteAccepted],
        depth: list[DepthAccepted],
        user: list[HubMessageReceived],
        later: list[Any] | None = None,
    ) -> int:
        """Judge each frame of ``msg`` in order (a non-frame is ignored); returns how many.

        With ``later``, only the trade frames are judged now; everything else is
        appended to it, to be judged (and counted) by a call without ``later``.
        """
        frames: object = msg.messages
        if type(frames) is not list:
            self._counts["messages_ignored"] += 1
            return 0
        on_hub_message = self.on_hub_message
        for frame in frames:
            if type(frame) is HubMessageReceived and (later is None or _is_trade(frame)):
                on_hub_message(frame, trades, quotes, depth, user)
            elif later is not None:
                later.append(frame)
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
            except (msgspec.DecodeError, TypeError, RecursionError):  # nested 1000 deep too
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
        fallback judges what it can (see ``fallback``).
        """
        rejected: Counter[str] | None = None  # the fallback's item counts: an admitted frame's
        try:
            contract, payload = decoder.decode(arguments)
        except (msgspec.DecodeError, TypeError, RecursionError):
            rejected = Counter()
            frame = fallback(arguments, rejected, kind, sanitise)
        else:
            frame = contract, payload if type(payload) is list else [payload]
        if frame is None or not frame[0]:
            self._counts["frames_malformed"] += 1
            return None
        if not self._admits(frame[0]):
            return None  # skipped whole: its items are not judged, so not counted either
        if rejected:
            for key, n in rejected.items():
                self._counts[key] += n
        return frame

    def _admits(self, contract: str) -> bool:
        if self._subscribed is not None:
            if contract in self._subscribed:
                return True
            self._counts["frames_unsubscribed"] += 1
        elif contract in self._admitted:
            return True
        elif len(self._admitted) >= self.config.max_contracts:
            self._counts["frames_over_contract_cap"] += 1
        else:
            self._admitted.add(contract)
            return True
        return False

    # ---------------------------------------------------------------- trades

    def on_trade_frame(self, msg: HubMessageReceived, received_us: int, out: list[Trade]) -> None:
        # The hot loop: everything it touches is a local (the contract's state too, written
        # back once per frame); one dict write per rejection.
        frame = self._frame(msg.arguments, TRADE_TICKS, "trades", sanitised_trade)
        if frame is None:
            return
        contract, items = frame
        counts = self._counts
        parse, received_at = self._timestamps.parse, msg.received_at
        max_future, max_age, stale, spike_low, spike_high = self._limits
        latest, earliest = received_us + max_future, received_us - max_age
        state = self._trade_state.get(contract)
        if state is None:
            # No trade yet: nothing is stale, and a NaN last price makes no spike.
            newest: float = -_INF
            last_price = _NAN
        else:
            # Even a newest beyond this frame's future bound stays the reference (a tape
            # whose ``t`` stepped back): an accepted trade is never more than ``stale_after``
            # older than it, which is what keeps the bar rings and replay's writer exact.
            newest, last_price = state[0], state[1]
        oldest = newest - stale  # a trade before it is stale
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
            elif ts < oldest:
                reason = "trades_rejected.stale"
            elif (deviation := abs(price / last_price - 1.0)) > spike_low and (
                deviation > spike_high or spike_exceeds(price, last_price, self.config.max_spike)
            ):
                reason = "trades_rejected.spike"
            else:
                if ts > newest:
                    newest = ts
                    oldest = ts - stale
                last_price = price
                append(Trade(contract, ts, price, volume, item.type, received_at))
                accepted += 1
                continue
            counts[reason] += 1
        if accepted:
            counts["trades_accepted"] += accepted
            if state is None:
                self._trade_state[contract] = [newest, last_price, accepted]
            else:
                state[0], state[1] = newest, last_price
                state[2] += accepted

    # ---------------------------------------------------------- quotes, depth

    def on_quote_frame(
        self, msg: HubMessageReceived, received_us: int, out: list[QuoteAccepted]
    ) -> None:
        frame = self._frame(msg.arguments, QUOTE_ARGS, "quotes", sanitised_quote)
        if frame is not None:
            self._book.quotes(frame[0], frame[1], received_us, msg.received_at, out)

    def on_depth_frame(
        self, msg: HubMessageReceived, received_us: int, out: list[DepthAccepted]
    ) -> None:
        frame = self._frame(msg.arguments, DEPTH_ARGS, "depth", sanitised_depth)
        if frame is not None:
            self._book.depth(frame[0], frame[1], received_us, msg.received_at, out)
