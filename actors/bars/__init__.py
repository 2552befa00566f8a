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
than validation's 60 s staleness window) or ``trades_before_cut`` (a history
bar holds it already).

Emission per inbox batch: one ``BarUpdated`` per touched bar (the latest state;
``closed=True`` marks a correction of a closed bar), ``BarClosed`` when the
clock (``Tick.now >= end + grace``) or ``Stop`` closes a bar. Updates touched
before a tick are emitted before that tick's closes. Forming bars close only by
the clock, so the runtime must keep sending ``Tick``s (replay: virtual ones).
A ``Request`` whose body is not ``GetBars`` is counted as unknown, unanswered.
A batch's messages are told without a scheduling point while the subscribers
have room (an awaited tell per message woke a subscriber per message), then
the actor yields once, so subscribers run once per batch.

History: ``BackfillStarted(contract, timeframes, cut)`` makes each series keep
a *tail*, the live trades from ``cut`` on that fall into the bar straddling it
(runs are split at every cut, so a run is wholly before or after it).
``BackfillBars(..., since, cut)`` then makes ``[since, cut)`` what history says
(live bars there were built from a partial view and are replaced; corrections
are told as ``BarUpdated(closed=True)``, new history bars as ``BarClosed`` with
``source="history"``; a bar the answer lacks is kept as it was told, counted as
``backfill_kept``: the answer is incomplete there), the straddling bar becomes
its history part plus the tail (``source="merged"``), and ``[since, cut)`` is
history's: a trade in it that arrives later, into a bar history gave, is
already in history and is counted as ``trades_before_cut``, not again; one into
a bar the answer lacked is added to it (a trade before ``since``, or from a
failed back-fill's window, is counted as any other). A back-fill whose cut is
not the series' latest is stale and ignored.

Reports to stats are cumulative counters plus the trade→bar latencies sampled
since the last report (none for a node fed by a tape: its receive times are the
recording's, so wall time minus them measures the tape's age). They go on a
``Tick`` at most once per ``report_interval`` seconds of the runtime clock
(``anyio.current_time()``, not ``Tick.now``: a replay's ticks are tape seconds,
thousands per real second, and every report costs stats work), whenever
``LATENCY_SAMPLES`` samples are waiting (so none is lost and the list stays
bounded), and at the end.

``actor`` is BarsActor (the inbox loop, the runs, closing and emitting, the
reports); ``backfill`` makes a window of a series history's and keeps each
contract's split points; ``book`` holds the mutable aggregates, the per-series
ring of closed bars and the conversion of history bars; ``table`` is the bar
table's schema and the last bars of a series as a polars DataFrame.
"""

from .actor import LATENCY_SAMPLES as LATENCY_SAMPLES
from .actor import BarsActor as BarsActor
from .table import bar_schema as bar_schema

__all__ = ["LATENCY_SAMPLES", "BarsActor", "bar_schema"]
