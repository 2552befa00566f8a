"""The bar book: mutable aggregates, the per-series ring of closed bars, history bars.

These are plain ``__slots__`` records rather than Structs because the hot path
mutates them per trade; ``Bar`` Structs are built from them only on the way out.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from operator import attrgetter

from protocols.messages import I64_MAX, Bar
from protocols.timeframes import BarClock


class Agg:
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
        "source",
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
        self.source = "live"  # a BarSource: live trades, gateway history, or both

    def absorb(self, run: Agg) -> bool:
        """Merge ``run``, whose trades all arrived after this aggregate's.

        True if the volume had to be held at ``I64_MAX`` (the output's Int64 column:
        a sum beyond it would fail every reader of the bar, live or replayed)."""
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
        self.trades += run.trades
        volume = self.volume + run.volume
        if volume > I64_MAX:
            self.volume = I64_MAX
            return True
        self.volume = volume
        return False


FAR_PAST = -(1 << 62)


MAX_COVERED = 8
"""History windows kept per series (touching ones merge: one per gap, mostly)."""


class Series:
    """The bars of one contract x timeframe, and where history takes over from live trades.

    ``covered``: the windows ``[since, cut)`` back-fills made history's, oldest
    first, disjoint; a trade in one that arrives later is in history already
    (not counted again), one outside all of them is not (a failed back-fill
    covers nothing, a gap's only the bars it asked for). ``covered_to``: the
    newest window's end, so a live trade passes with one compare. ``cut``: a
    back-fill under way covers everything before it; ``tail`` then aggregates
    the live trades from ``cut`` on that fall into the bar straddling it, the
    part of that bar history will not have.
    """

    __slots__ = (
        "closed",
        "contract",
        "covered",
        "covered_to",
        "cut",
        "forming",
        "tail",
        "timeframe",
    )

    def __init__(self, contract: str, timeframe: str, ring_size: int) -> None:
        self.contract = contract
        self.timeframe = timeframe
        self.forming: dict[int, Agg] = {}
        self.closed: deque[Agg] = deque(maxlen=ring_size)
        self.covered: list[tuple[int, int]] = []
        self.covered_to = FAR_PAST
        self.cut: int | None = None
        self.tail: Agg | None = None

    def bar(self, agg: Agg) -> Bar:
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
            agg.source,  # type: ignore[arg-type]
        )

    def in_history(self, ts: int) -> bool:
        """Whether a back-fill already counted the trades at ``ts``."""
        return ts < self.covered_to and any(lo <= ts < hi for lo, hi in self.covered)

    def cover(self, since: int, cut: int) -> None:
        """Note ``[since, cut)`` as history's, merged with the windows it touches."""
        if since >= cut:
            return
        kept = []
        for lo, hi in self.covered:
            if hi < since or lo > cut:
                kept.append((lo, hi))
            else:
                since, cut = min(since, lo), max(cut, hi)
        kept.append((since, cut))
        kept.sort()
        self.covered = kept[-MAX_COVERED:]
        self.covered_to = self.covered[-1][1]

    def find_closed(self, start: int) -> Agg | None:
        for agg in reversed(self.closed):  # late trades hit the newest few bars
            if agg.start <= start:
                return agg if agg.start == start else None
        return None

    def archive(self, agg: Agg) -> None:
        """Move ``agg`` into the sorted ring (a bar older than a full ring holds is not kept)."""
        agg.closed = True
        ring = self.closed
        if not ring or ring[-1].start < agg.start:
            ring.append(agg)  # maxlen drops the oldest
            return
        i = bisect_left(ring, agg.start, key=by_start)
        if len(ring) == ring.maxlen:
            if i == 0:
                return
            ring.popleft()
            i -= 1
        ring.insert(i, agg)


by_start = attrgetter("start")


def history_agg(clock: BarClock, bar: object) -> Agg | None:
    """A history bar as an aggregate, or None if it is not a sane bar aligned to ``clock``."""
    if not isinstance(bar, Bar):
        return None
    prices = (bar.open, bar.high, bar.low, bar.close)
    if not all(isinstance(p, int | float) and 0 < p < math.inf for p in prices):
        return None
    if not bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high:
        return None
    if not all(isinstance(v, int) and 0 <= v <= I64_MAX for v in (bar.volume, bar.trades)):
        return None
    if not isinstance(bar.start, int) or bar.start < 0:
        return None
    try:
        start, end = clock.bounds(bar.start)
    except ValueError:  # outside the supported date range
        return None
    if start != bar.start:
        return None
    # A history bar has no trade times: pin both to its start so that a live
    # trade amending it later takes the close and leaves the open.
    agg = Agg(start, end, start, bar.open, bar.volume, bar.trades)
    agg.high, agg.low, agg.close = bar.high, bar.low, bar.close
    agg.source = "history"
    return agg
