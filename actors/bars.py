"""The bars actor: OHLCV bars on many timeframes from accepted trades.

Theory of operation
-------------------
Per (contract, timeframe) a ``_Series`` holds the forming bars (normally one;
two or more while a late trade or a slow clock keeps an earlier bar open) and
a bounded ring of closed bars, both as mutable ``_Agg`` records. ``Bar``
Structs are built only when something is emitted or asked for.

A bar's open is the price of its earliest trade by timestamp and its close
that of its latest; ties go to arrival order, hence every aggregate carries
``first_ts``/``last_ts``: ``<`` for the open (the earlier arrival keeps it),
``>=`` for the close (the later arrival takes it).

Hot path: trades are first folded into one *run* per contract. A run is an
``_Agg`` whose interval is the intersection of the current bar intervals of
all timeframes, so every trade of a run lands in the same bar of every
timeframe. Aggregates of consecutive arrivals merge exactly (the rules above
are associative over arrival order), so a run is applied to the N timeframes
once, when it breaks or before any other message is handled — the per-trade
cost is one dict lookup and a few compares, whatever N is.

Invariants: a bar is in exactly one place (``forming`` or ``closed``); closed
rings are sorted by start and hold at most ``ring_size`` bars; every accepted
trade is in exactly one bar per timeframe unless counted ``late_beyond_ring``
(its bar already fell out of the ring, possible only when the ring covers less
than validation's 60 s staleness window).

Emission per inbox batch: one ``BarUpdated`` per touched bar (the latest state;
``closed=True`` marks a correction of a closed bar), ``BarClosed`` when the
clock (``Tick.now >= end + grace``) or ``Stop`` closes a bar. Updates touched
before a tick are emitted before that tick's closes. Forming bars close only by
the clock, so the runtime must keep sending ``Tick``s (replay: virtual ones).
A ``Request`` whose body is not ``GetBars`` is counted as unknown, unanswered.
A batch's messages are told without a scheduling point while the subscribers
have room (an awaited tell per message woke a subscriber per message), then
the actor yields once, so subscribers run once per batch.

Reports to stats are cumulative counters plus the trade→bar latencies sampled
since the last report. They go on a ``Tick`` at most once per
``report_interval`` seconds of the runtime clock (``anyio.current_time()``, not
``Tick.now``: a replay's ticks are tape seconds, thousands per real second, and
every report costs stats work), whenever ``LATENCY_SAMPLES`` samples are
waiting (so none is lost and the list stays bounded), and at the end.
"""

from __future__ import annotations

import contextlib
import math
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import anyio
import polars as pl

from protocols.errors import ConfigError, MailboxClosed, MailboxFull
from protocols.interfaces import ActorContext, Inbox, Ref
from protocols.messages import (
    BackfillBars,
    Bar,
    BarClosed,
    BarUpdated,
    CountersReported,
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

BATCH_LIMIT = 512
LATENCY_SAMPLES = 1024
COUNTERS = (
    "trades_aggregated",
    "late_trades",  # trades that amended an already closed bar
    "late_beyond_ring",  # trades whose bar had left the ring: not aggregated
    "bars_closed",
    "bars_corrected",  # BarUpdated(closed=True) emitted
    "backfill_inserted",
    "backfill_rejected",
    "unknown_messages",
)

SCHEMA: dict[str, Any] = {
    "contract": pl.String,
    "timeframe": pl.String,
    "start": pl.Datetime("us", "UTC"),
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Int64,
    "trades": pl.Int64,
}


class _Agg:
    """A mutable aggregate over trades in ``[start, end)``: a run or a bar."""

    __slots__ = (
        "close",
        "closed",
        "dirty",
        "end",
        "first_ts",
        "high",
        "last_ts",
        "low",
        "open",
        "start",
        "trades",
        "volume",
    )

    def __init__(self, start: int, end: int, ts: int, price: float, volume: int, trades: int):
        self.start = start
        self.end = end
        self.first_ts = self.last_ts = ts
        self.open = self.close = self.high = self.low = price
        self.volume = volume
        self.trades = trades
        self.closed = False  # in the closed ring
        self.dirty = False  # in the batch's touched list

    def absorb(self, run: _Agg) -> None:
        """Merge ``run``, whose trades all arrived after this aggregate's."""
        if run.first_ts < self.first_ts:
            self.first_ts = run.first_ts
            self.open = run.open
        if run.last_ts >= self.last_ts:
            self.last_ts = run.last_ts
            self.close = run.close
        if run.high > self.high:
            self.high = run.high
        if run.low < self.low:
            self.low = run.low
        self.volume += run.volume
        self.trades += run.trades


class _Series:
    __slots__ = ("closed", "contract", "forming", "timeframe")

    def __init__(self, contract: str, timeframe: str, ring_size: int) -> None:
        self.contract = contract
        self.timeframe = timeframe
        self.forming: dict[int, _Agg] = {}
        self.closed: deque[_Agg] = deque(maxlen=ring_size)

    def bar(self, agg: _Agg) -> Bar:
        return Bar(
            self.contract,
            self.timeframe,
            agg.start,
            agg.open,
            agg.high,
            agg.low,
            agg.close,
            agg.volume,
            agg.trades,
        )

    def find_closed(self, start: int) -> _Agg | None:
        for agg in reversed(self.closed):  # late trades hit the newest few bars
            if agg.start <= start:
                return agg if agg.start == start else None
        return None

    def archive(self, agg: _Agg) -> None:
        """Move ``agg`` into the sorted ring (a bar older than a full ring holds is not kept)."""
        agg.closed = True
        ring = self.closed
        if not ring or ring[-1].start < agg.start:
            ring.append(agg)  # maxlen drops the oldest
            return
        i = bisect_left(ring, agg.start, key=_start)
        if len(ring) == ring.maxlen:
            if i == 0:
                return
            ring.popleft()
            i -= 1
        ring.insert(i, agg)


_start = attrgetter("start")


class BarsActor:
    """Builds bars for ``timeframes`` (e.g. ``["1min", "4hr"]``) from ``TradesAccepted``."""

    def __init__(
        self,
        timeframes: Sequence[str],
        ring_size: int = 1000,
        grace: float = 0.0,
        report_interval: float = 1.0,
    ):
        if isinstance(timeframes, str) or not timeframes:
            raise ConfigError("bars need a non-empty list of timeframes, e.g. ['1min', '4hr']")
        if not isinstance(ring_size, int) or ring_size < 1:
            raise ConfigError(f"bars ring_size must be an int >= 1, got {ring_size!r}")
        if not isinstance(grace, int | float) or not 0 <= grace < math.inf:
            raise ConfigError(f"bars grace must be a finite number >= 0, got {grace!r}")
        if not isinstance(report_interval, int | float) or not 0 < report_interval < math.inf:
            raise ConfigError(
                f"bars report_interval must be a finite number > 0, got {report_interval!r}"
            )
        parsed = {tf.name: tf for tf in map(parse_timeframe, timeframes)}
        self.timeframes: tuple[Timeframe, ...] = tuple(parsed.values())
        self._index = {name: k for k, name in enumerate(parsed)}
        self._clocks = [BarClock(tf) for tf in self.timeframes]
        self._series: list[dict[str, _Series]] = [{} for _ in self.timeframes]
        self._ring_size = ring_size
        self._grace_us = round(grace * 1_000_000)
        self._report_interval = report_interval
        self._runs: dict[str, _Agg] = {}
        self._touched: list[tuple[_Series, _Agg]] = []
        self._outbox: list[Message] = []
        self._now_us: int | None = None  # the clock as of the last Tick
        self._overdue = False  # a bar was born already due (late trade into a gap)
        self._next_end = math.inf  # no forming bar ends before this (µs): ticks skip the scan
        self.counters = dict.fromkeys(COUNTERS, 0)

    # ------------------------------------------------------------- the actor

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        topic = ctx.ref("topic.bars")
        stats = ctx.ref("stats")
        latencies: list[float] = []  # since the last report, at most LATENCY_SAMPLES
        reported_at = -math.inf  # anyio.current_time() of the last report
        flushes: list[Any] = []  # reply refs of Flush barriers in the current batch
        while batch := await inbox.receive_batch(BATCH_LIMIT):
            received_at: float | None = None
            stopping = ticked = False
            for msg in batch:
                if type(msg) is TradesAccepted:
                    if received_at is None and msg.trades:
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
            await self._emit(topic)
            self._answer(flushes)
            if received_at is not None:
                latencies.append(ctx.wall_time() - received_at)
            now = anyio.current_time()
            due = ticked and now - reported_at >= self._report_interval
            if due or len(latencies) >= LATENCY_SAMPLES:
                reported_at = now
                self._report(stats, latencies)
        self.on_stop()
        await self._emit(topic)
        self._answer(flushes)
        self._report(stats, latencies)

    def _answer(self, flushes: list[Any]) -> None:
        """Answer Flush barriers: everything before them has been told downstream."""
        for reply in flushes:
            reply.tell_nowait(dict(self.counters))
        flushes.clear()

    async def _emit(self, topic: Ref[Any]) -> None:
        """Tell the batch's bars; wait only while a subscriber is full, then yield once.

        A topic's ``tell_nowait`` raises ``WouldBlock`` before it delivers to
        anyone, so the awaited retry sends each message exactly once.
        """
        self._collect_touched()
        outbox, self._outbox = self._outbox, []
        for msg in outbox:
            try:
                topic.tell_nowait(msg)
            except anyio.WouldBlock:
                await topic.tell(msg)
        if outbox:
            await anyio.lowlevel.checkpoint()  # however fast the subscribers, others run

    def _report(self, stats: Ref[Any], latencies: list[float]) -> None:
        report = CountersReported(
            source="bars",
            counters=dict(self.counters),
            latencies={"trade_to_bar": list(latencies)},
        )
        latencies.clear()
        # reports are cumulative: if this one cannot be queued, the next carries its counts
        with contextlib.suppress(anyio.WouldBlock, MailboxFull, MailboxClosed):
            stats.tell_nowait(report)

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
                runs[t.contract] = _Agg(int(lo), int(hi), ts, price, t.volume, 1)
        self.counters["trades_aggregated"] += len(trades)

    def flush_runs(self) -> None:
        """Apply every pending run; needed before anything reads or closes bars."""
        for contract, run in self._runs.items():
            self._apply(contract, run)
        self._runs.clear()

    def _apply(self, contract: str, run: _Agg) -> None:
        late = False
        for clock, by_contract in zip(self._clocks, self._series, strict=True):
            series = by_contract.get(contract)
            if series is None:
                series = by_contract[contract] = _Series(contract, clock.tf.name, self._ring_size)
            start, end = clock.bounds(run.start)
            agg = series.forming.get(start) or series.find_closed(start)
            if agg is None:
                ring = series.closed
                if len(ring) == ring.maxlen and start < ring[0].start:
                    self.counters["late_beyond_ring"] += run.trades
                    continue
                agg = series.forming[start] = _Agg(start, end, run.first_ts, run.open, 0, 0)
                self._next_end = min(self._next_end, end)
                if self._now_us is not None and end + self._grace_us <= self._now_us:
                    self._overdue = True
            agg.absorb(run)
            late = late or agg.closed
            if not agg.dirty:
                agg.dirty = True
                self._touched.append((series, agg))
        if late:
            self.counters["late_trades"] += run.trades

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

    def _close(self, series: _Series, due: list[_Agg]) -> None:
        due.sort(key=_start)
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

    def on_backfill(self, msg: BackfillBars) -> None:
        """Merge history bars into the ring; a live bar on the same start wins."""
        k = self._index.get(msg.timeframe)
        if k is None or not isinstance(msg.contract, str) or not isinstance(msg.bars, list):
            self.counters["backfill_rejected"] += len(msg.bars) if isinstance(msg.bars, list) else 1
            return
        clock = self._clocks[k]
        series = self._series[k].get(msg.contract)
        if series is None:
            series = self._series[k][msg.contract] = _Series(
                msg.contract, msg.timeframe, self._ring_size
            )
        known = set(series.forming) | {agg.start for agg in series.closed}
        fresh: dict[int, _Agg] = {}
        for bar in msg.bars:
            agg = _history_agg(clock, bar)
            if agg is None:
                self.counters["backfill_rejected"] += 1
            elif agg.start not in known and agg.start not in fresh:
                fresh[agg.start] = agg
        merged = sorted([*series.closed, *fresh.values()], key=_start)[-self._ring_size :]
        series.closed.clear()
        series.closed.extend(merged)
        for agg in merged:
            if agg.start in fresh:
                agg.closed = True
                self._outbox.append(BarClosed(series.bar(agg)))
                self.counters["backfill_inserted"] += 1

    def on_get_bars(self, query: GetBars) -> pl.DataFrame:
        """The last ``n`` bars, closed then forming, as a DataFrame (empty if unknown)."""
        k = self._index.get(query.timeframe)
        series = None if k is None else self._series[k].get(query.contract)
        n = query.n if isinstance(query.n, int) else 0
        if series is None or n <= 0:
            return pl.DataFrame(schema=SCHEMA)
        aggs = [*series.closed, *sorted(series.forming.values(), key=_start)][-n:]
        columns = {
            "contract": [series.contract] * len(aggs),
            "timeframe": [series.timeframe] * len(aggs),
            "start": [a.start for a in aggs],
            "open": [a.open for a in aggs],
            "high": [a.high for a in aggs],
            "low": [a.low for a in aggs],
            "close": [a.close for a in aggs],
            "volume": [a.volume for a in aggs],
            "trades": [a.trades for a in aggs],
        }
        frame = pl.DataFrame(columns, schema={**SCHEMA, "start": pl.Int64})
        return frame.with_columns(pl.col("start").cast(SCHEMA["start"]))


def _history_agg(clock: BarClock, bar: object) -> _Agg | None:
    """A history bar as an aggregate, or None if it is not a sane bar aligned to ``clock``."""
    if not isinstance(bar, Bar):
        return None
    prices = (bar.open, bar.high, bar.low, bar.close)
    if not all(isinstance(p, int | float) and 0 < p < math.inf for p in prices):
        return None
    if not bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high:
        return None
    if not all(isinstance(v, int) and v >= 0 for v in (bar.volume, bar.trades, bar.start)):
        return None
    try:
        start, end = clock.bounds(bar.start)
    except (ValueError, OverflowError):
        return None
    if start != bar.start:
        return None
    # A history bar has no trade times: pin both to its start so that a live
    # trade amending it later takes the close and leaves the open.
    agg = _Agg(start, end, start, bar.open, bar.volume, bar.trades)
    agg.high, agg.low, agg.close = bar.high, bar.low, bar.close
    return agg
