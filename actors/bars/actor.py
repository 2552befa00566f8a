"""BarsActor: the inbox loop, the per-contract runs, closing, emitting and reporting.

It owns all the state and reads every message; the work of a back-fill is in
``backfill``, the bar table (polars) in ``table``.

The theory of operation is in the package docstring (``actors/bars/__init__.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from protocols.checks import count, non_negative, positive
from protocols.errors import ConfigError
from protocols.interfaces import ActorContext, Inbox, Ref, optional_ref, tell_when_room
from protocols.messages import (
    BackfillBars,
    BackfillStarted,
    BarClosed,
    BarUpdated,
    CountersReported,
    CutPassed,
    Flush,
    GetBars,
    Message,
    Request,
    Stop,
    Tick,
    TrackTimeframes,
    Trade,
    TradesAccepted,
)
from protocols.timeframes import BarClock, Timeframe, parse_timeframe

from .backfill import recut, take_history
from .book import Agg, Series, by_start
from .table import bars_frame

BATCH_LIMIT = 512
LATENCY_SAMPLES = 1024
COUNTERS = (
    "trades_aggregated",
    "late_trades",  # trades that amended an already closed bar
    "late_beyond_ring",  # trades whose bar had left the ring: not aggregated
    "bars_closed",
    "bars_corrected",  # BarUpdated(closed=True) emitted
    "backfill_inserted",  # history bars taken into the book (new or replacing live ones)
    "backfill_kept",  # bars of a back-fill's window its answer lacks: kept as they were
    "backfill_rejected",  # history bars not aligned, not sane or outside their window
    "backfill_stale",  # back-fills whose cut was superseded by a newer one
    "trades_before_cut",  # trades that history had counted already: not counted again
    "volume_saturated",  # bar updates whose volume was held at 2**63-1 instead of overflowing
    "unknown_messages",
)

if TYPE_CHECKING:
    import polars as pl


class BarsActor:
    """Builds bars for ``timeframes`` (e.g. ``["1min", "4hr"]``) from ``TradesAccepted``."""

    def __init__(
        self,
        timeframes: Sequence[str],
        ring_size: int = 1000,
        grace: float = 0.0,
        report_interval: float = 1.0,
        *,
        latency: bool = True,
    ):
        """``latency``: sample trade→bar latency (wall time minus the trades' receive time);
        off for a node fed by a tape, whose receive times are the recording's."""
        if isinstance(timeframes, str) or not timeframes:
            raise ConfigError("bars need a non-empty list of timeframes, e.g. ['1min', '4hr']")
        count("bars ring_size", ring_size)
        non_negative("bars grace", grace)
        positive("bars report_interval", report_interval)
        parsed = {tf.name: tf for tf in map(parse_timeframe, timeframes)}
        self.timeframes: tuple[Timeframe, ...] = tuple(parsed.values())
        self._index = {name: k for k, name in enumerate(parsed)}
        self._clocks = [BarClock(tf) for tf in self.timeframes]
        self._series: list[dict[str, Series]] = [{} for _ in self.timeframes]
        self._ring_size = ring_size
        self._grace_us = round(grace * 1_000_000)
        self._report_interval = report_interval
        self._runs: dict[str, Agg] = {}
        self._cuts: dict[str, list[int]] = {}  # per contract: runs never straddle these
        self._unpassed: dict[str, list[int]] = {}  # per contract: cuts no trade reached, sorted
        self._passed: list[CutPassed] = []  # for history, told with the batch's bars
        self._touched: list[tuple[Series, Agg]] = []
        self._outbox: list[Message] = []
        self._now_us: int | None = None  # the clock as of the last Tick
        self._overdue = False  # a bar was born already due (late trade into a gap)
        self._next_end = math.inf  # no forming bar ends before this (µs): ticks skip the scan
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._latency = latency

    # ------------------------------------------------------------- the actor

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        topic = ctx.ref("topic.bars")
        stats = ctx.ref("stats")
        history = optional_ref(ctx, "history")
        latencies: list[float] = []  # since the last report, at most LATENCY_SAMPLES
        reported_at = -math.inf  # anyio.current_time() of the last report
        flushes: list[Any] = []  # reply refs of Flush barriers in the current batch
        while batch := await inbox.receive_batch(BATCH_LIMIT):
            received_at: float | None = None
            stopping = ticked = False
            for msg in batch:
                if type(msg) is TradesAccepted:
                    if received_at is None and msg.trades and self._latency:
                        received_at = msg.trades[0].received_at
                    self.on_trades(msg.trades)
                    continue
                self.flush_runs()
                if isinstance(msg, Tick):
                    self.on_tick(msg.now)
                    ticked = True
                elif isinstance(msg, Request) and isinstance(msg.body, GetBars):
                    msg.reply.tell_nowait(self.on_get_bars(msg.body))
                elif isinstance(msg, Request) and isinstance(msg.body, Flush):
                    flushes.append(msg.reply)
                elif isinstance(msg, BackfillBars):
                    self.on_backfill(msg)
                elif isinstance(msg, BackfillStarted):
                    self.on_backfill_started(msg)
                elif isinstance(msg, TrackTimeframes):
                    self.on_track(msg.timeframes)
                elif isinstance(msg, Stop):
                    stopping = True
                    break
                else:
                    self.counters["unknown_messages"] += 1
            if stopping:
                break
            self.flush_runs()
            if self._overdue and self._now_us is not None:
                self._close_due(self._now_us)
            told = await self._emit(topic)
            self._tell_passed(history)
            asked = bool(flushes)  # a barrier's asker (a tape's end) reads the stats next
            self._answer(flushes)
            if received_at is not None:  # sampled when told, not after the others ran
                latencies.append(ctx.wall_time() - received_at)
            now = anyio.current_time()
            due = ticked and now - reported_at >= self._report_interval
            if due or asked or len(latencies) >= LATENCY_SAMPLES:
                reported_at = now
                self._report(stats, latencies)
            if told:
                await anyio.lowlevel.checkpoint()  # however fast the subscribers, others run
        self.on_stop()
        await self._emit(topic)
        self._answer(flushes)
        self._report(stats, latencies)

    def _answer(self, flushes: list[Any]) -> None:
        """Answer Flush barriers: everything before them has been told downstream."""
        for reply in flushes:
            reply.tell_nowait(dict(self.counters))
        flushes.clear()

    async def _emit(self, topic: Ref[Any]) -> bool:
        """Tell the batch's bars, waiting only while a subscriber is full; True if any.

        The caller yields after a batch that told something (once its latency is sampled).
        """
        self._collect_touched()
        outbox, self._outbox = self._outbox, []
        for msg in outbox:
            await tell_when_room(topic, msg)
        return bool(outbox)

    def _tell_passed(self, history: Ref[Any] | None) -> None:
        # History waits for one of these per cut, at most a while: a dropped one costs time.
        if history is not None:
            for msg in self._passed:
                history.try_tell(msg)
        self._passed.clear()

    def _report(self, stats: Ref[Any], latencies: list[float]) -> None:
        report = CountersReported(
            source="bars",
            counters=dict(self.counters),
            latencies={"trade_to_bar": list(latencies)} if self._latency else {},
        )
        latencies.clear()
        # reports are cumulative: if this one cannot be queued, the next carries its counts
        stats.try_tell(report)

    # ------------------------------------------------- the book (sans-IO core)

    def on_trades(self, trades: list[Trade]) -> None:
        """Fold trades into per-contract runs (see the theory of operation)."""
        runs = self._runs
        get = runs.get
        for t in trades:
            ts = t.ts
            price = t.price
            run = get(t.contract)
            if run is not None and run.start <= ts < run.end:
                if ts < run.first_ts:
                    run.first_ts = ts
                    run.open = price
                if ts >= run.last_ts:
                    run.last_ts = ts
                    run.close = price
                if price > run.high:
                    run.high = price
                elif price < run.low:
                    run.low = price
                run.volume += t.volume
                run.trades += 1
            else:
                if run is not None:
                    self._apply(t.contract, run)
                lo, hi = -math.inf, math.inf
                for clock in self._clocks:
                    start, end = clock.bounds(ts)
                    lo, hi = max(lo, start), min(hi, end)
                for cut in self._cuts.get(t.contract, ()):
                    if lo < cut < hi:
                        lo, hi = (lo, cut) if ts < cut else (cut, hi)
                runs[t.contract] = Agg(int(lo), int(hi), ts, price, t.volume, 1)
        self.counters["trades_aggregated"] += len(trades)

    def flush_runs(self) -> None:
        """Apply every pending run; needed before anything reads or closes bars."""
        for contract, run in self._runs.items():
            self._apply(contract, run)
        self._runs.clear()

    def _apply(self, contract: str, run: Agg) -> None:
        late = counted = False
        unpassed = self._unpassed.get(contract)
        while unpassed and run.start >= unpassed[0]:  # runs never straddle a cut
            self._passed.append(CutPassed(contract, unpassed.pop(0)))
        for clock, by_contract in zip(self._clocks, self._series, strict=True):
            series = by_contract.get(contract)
            if series is None:
                series = by_contract[contract] = Series(contract, clock.tf.name, self._ring_size)
            # A run never straddles a window: ``since`` is a bar start of the series (the
            # history actor's first whole bar) and runs are split at every cut.
            start, end = clock.bounds(run.start)
            if series.in_history(run.start):
                agg = series.forming.get(start) or series.find_closed(start)
                if agg is not None and agg.source != "live":
                    counted = True  # history has these trades
                    continue
                # else a bar the back-fill lacked (kept, or none): none of its trades is history's
            cut = series.cut
            if cut is not None and start < cut <= run.start:
                tail = series.tail
                if tail is None:
                    tail = series.tail = Agg(start, end, run.first_ts, run.open, 0, 0)
                if tail.absorb(run):
                    self.counters["volume_saturated"] += 1
            agg = series.forming.get(start) or series.find_closed(start)
            if agg is None:
                ring = series.closed
                if len(ring) == ring.maxlen and start < ring[0].start:
                    self.counters["late_beyond_ring"] += run.trades
                    continue
                agg = series.forming[start] = Agg(start, end, run.first_ts, run.open, 0, 0)
                self._next_end = min(self._next_end, end)
                if self._now_us is not None and end + self._grace_us <= self._now_us:
                    self._overdue = True
            if agg.absorb(run):
                self.counters["volume_saturated"] += 1
            if agg.source == "history":
                agg.source = "merged"
            late = late or agg.closed
            if not agg.dirty:
                agg.dirty = True
                self._touched.append((series, agg))
        if late:
            self.counters["late_trades"] += run.trades
        if counted:
            self.counters["trades_before_cut"] += run.trades

    def _collect_touched(self) -> None:
        for series, agg in self._touched:
            agg.dirty = False
            self._outbox.append(BarUpdated(series.bar(agg), closed=agg.closed))
            if agg.closed:
                self.counters["bars_corrected"] += 1
        self._touched.clear()

    def on_tick(self, now: float) -> None:
        if not isinstance(now, int | float) or not math.isfinite(now):
            self.counters["unknown_messages"] += 1
            return
        self._now_us = round(now * 1_000_000)
        self._close_due(self._now_us)

    def _close_due(self, now_us: int) -> None:
        self._collect_touched()  # updates before the closes they precede
        self._overdue = False
        deadline = now_us - self._grace_us
        if deadline < self._next_end:
            return  # nothing is due: most ticks end here
        next_end = math.inf
        for by_contract in self._series:
            for series in by_contract.values():
                if series.forming:
                    self._close(series, [a for a in series.forming.values() if a.end <= deadline])
                    for agg in series.forming.values():
                        next_end = min(next_end, agg.end)
        self._next_end = next_end

    def on_stop(self) -> None:
        self.flush_runs()
        self._collect_touched()
        for by_contract in self._series:
            for series in by_contract.values():
                self._close(series, list(series.forming.values()))

    def _close(self, series: Series, due: list[Agg]) -> None:
        due.sort(key=by_start)
        for agg in due:
            del series.forming[agg.start]
            series.archive(agg)
            self._outbox.append(BarClosed(series.bar(agg)))
        self.counters["bars_closed"] += len(due)

    def on_track(self, names: Sequence[str]) -> None:
        """Build more timeframes from now on (runs are flushed first, so spans stay exact).

        Trades before this point are not replayed into the new timeframes; the
        history back-fill is what fills their past.
        """
        try:
            added = [parse_timeframe(name) for name in names]
        except (ConfigError, TypeError):
            self.counters["unknown_messages"] += 1
            return
        for tf in added:
            if tf.name not in self._index:
                self._index[tf.name] = len(self.timeframes)
                self.timeframes = (*self.timeframes, tf)
                self._clocks.append(BarClock(tf))
                self._series.append({})

    def on_backfill_started(self, msg: BackfillStarted) -> None:
        """From ``msg.cut`` on, keep the live trades of each straddling bar apart (``tail``)."""
        for name in msg.timeframes:
            series = self._series_of(msg.contract, name)
            if series is not None:
                series.cut, series.tail = msg.cut, None
        if isinstance(msg.contract, str) and isinstance(msg.cut, int):
            unpassed = self._unpassed.setdefault(msg.contract, [])
            if msg.cut not in unpassed:
                unpassed.append(msg.cut)
                unpassed.sort()
            recut(msg.contract, self._series, self._cuts, self._unpassed)

    def _series_of(self, contract: Any, timeframe: Any) -> Series | None:
        k = self._index.get(timeframe)
        if k is None or not isinstance(contract, str):
            return None
        series = self._series[k].get(contract)
        if series is None:
            series = self._series[k][contract] = Series(contract, timeframe, self._ring_size)
        return series

    def on_backfill(self, msg: BackfillBars) -> None:
        """Give a back-fill to ``take_history``, unless it is for no series or has no list
        of bars (rejected whole) or is stale (its cut is not the series' latest)."""
        bars = msg.bars if isinstance(msg.bars, list) else []
        series = self._series_of(msg.contract, msg.timeframe)
        if series is None or not isinstance(msg.bars, list):
            self.counters["backfill_rejected"] += max(1, len(bars))
            return
        if series.cut != msg.cut:
            self.counters["backfill_stale"] += 1
            return
        self._collect_touched()  # pending updates of bars about to be replaced go first
        clock = self._clocks[self._index[msg.timeframe]]
        now_us = self._now_us
        deadline = -math.inf if now_us is None else now_us - self._grace_us
        next_end = take_history(
            series, clock, bars, msg.since, msg.cut, deadline, self.counters, self._outbox
        )
        self._next_end = min(self._next_end, next_end)
        # the series' window grew and its cut is gone: the split points follow
        recut(series.contract, self._series, self._cuts, self._unpassed)

    def on_get_bars(self, query: GetBars) -> pl.DataFrame:
        """The last ``n`` bars, closed then forming, as a DataFrame (empty if unknown)."""
        k = self._index.get(query.timeframe)
        series = None if k is None else self._series[k].get(query.contract)
        return bars_frame(series, query.n)
