"""The pure side of the history actor: when a gap opens, where the cut goes, what to ask
for, and how the bars of every timeframe are made from the gateway's source bars.

Nothing here waits or keeps state, so every rule of the theory of operation
(the hub-state table, the cut, the segments a bar is tiled from, the checks one
history bar must pass) is a plain function of its arguments.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import msgspec

from protocols import gateway as gw
from protocols.messages import Bar
from protocols.timeframes import BarClock, Timeframe

from .config import LONGEST_US

Source = Literal["sec", "min", "hr"]

SOURCES: Final[tuple[Source, ...]] = ("sec", "min", "hr")
"""Source bars, in the order they are fetched: the shortest timeframes are ready first."""

SOURCE_FRAMES: Final[dict[Source, Timeframe]] = {
    "sec": Timeframe("1sec", "sec", 1),
    "min": Timeframe("1min", "min", 1),
    "hr": Timeframe("1hr", "hr", 1),
}
_SECOND: Final = 1_000_000
_MINUTE: Final = 60 * _SECOND
_HOUR: Final = 60 * _MINUTE
SOURCE_US: Final[dict[Source, int]] = {"sec": _SECOND, "min": _MINUTE, "hr": _HOUR}

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_INT64: Final = 1 << 63
# A market open 5 days in 7 less holidays: N bars of trading span up to ~1.5 N of calendar.
_CALENDAR_PER_TRADING: Final = 1.5

# (hub state, event) -> (next state, action); see the table in the package docstring.
TRANSITIONS: Final = {
    ("unknown", "connected"): ("up", "gap"),
    ("unknown", "disconnected"): ("down", "mark"),
    ("up", "connected"): ("up", "none"),
    ("up", "disconnected"): ("down", "mark"),
    ("down", "connected"): ("up", "gap"),
    ("down", "disconnected"): ("down", "none"),
}

Segment = tuple[Source, int, int]


def initial_since(tf: Timeframe, now_us: int, initial_bars: int, min_lookback: float) -> int:
    """Start of the start-up window: a bar start far enough back to find ``initial_bars`` bars."""
    reach = initial_bars * LONGEST_US[tf.unit] * tf.n
    back = now_us - round(reach * _CALENDAR_PER_TRADING + min_lookback * 1e6)
    return BarClock(tf).start_of(back)


def bar_before(tf: Timeframe, ts_us: int) -> int:
    """Start of the bar before the one that contains ``ts_us``."""
    clock = BarClock(tf)
    return clock.start_of(clock.start_of(ts_us) - 1)


def cut_after(now_us: int, margin: float) -> int:
    """The cut: the first whole second at least ``margin`` seconds after ``now_us``."""
    at = now_us + round(margin * _SECOND)
    return -(-at // _SECOND) * _SECOND


def segments(tf: Timeframe, since: int, cut: int) -> list[Segment]:
    """The source bars that tile ``[since, cut)`` for ``tf``, oldest first.

    Every bar boundary of a frame of an hour or more is a whole UTC hour (17:00
    Chicago is one, on DST days too), so such bars are tiled by 1hr bars up to
    the cut's hour, then 1min bars up to its minute, then 1sec bars; minute
    frames by 1min then 1sec bars; second frames by 1sec bars. The gateway's
    own bars of these three sizes start at floor(UTC time, size), like ours.
    """
    minute = cut - cut % _MINUTE
    if tf.unit == "sec":
        parts: list[Segment] = [("sec", since, cut)]
    elif tf.unit == "min":
        parts = [("min", since, minute), ("sec", minute, cut)]
    else:
        hour = cut - cut % _HOUR
        parts = [("hr", since, hour), ("min", max(since, hour), minute), ("sec", minute, cut)]
    return [(source, lo, hi) for source, lo, hi in parts if lo < hi]


def iso(ts_us: int) -> str:
    return (_EPOCH + ts_us * _ONE_US).isoformat()


def to_bar(
    contract: str, tf: Timeframe, clock: BarClock, item: Any, window: tuple[int, int]
) -> Bar | str:
    """One source bar as a ``Bar``, or the reason (one of ``REJECTS``) it is refused."""
    if isinstance(item, msgspec.Raw):
        try:
            item = gw.decoder(gw.HistoryBar).decode(item)
        except msgspec.DecodeError:
            return "malformed"
    try:
        moment = datetime.fromisoformat(item.t)
    except ValueError:
        return "time"
    if moment.tzinfo is None:  # no offset: UTC, as everywhere at the gateway edge
        moment = moment.replace(tzinfo=UTC)
    start = (moment - _EPOCH) // _ONE_US
    if start < window[0]:
        return "time"
    o, h, low, c, v = item.o, item.h, item.l, item.c, item.v
    if not (0 < low <= o <= h < math.inf and low <= c <= h):
        return "price"  # also catches NaN: every comparison with it is false
    if not 0 <= v < _INT64:
        return "volume"
    try:
        lo, hi = clock.bounds(start)
    except ValueError:  # outside the supported date range
        return "time"
    if lo != start:
        return "unaligned"
    if hi > window[1]:
        return "partial"
    return Bar(contract, tf.name, start, o, h, low, c, v, trades=0, source="history")


def derive(
    contract: str,
    tf: Timeframe,
    parts: list[Segment],
    rows: dict[Source, list[Bar]],
    complete_from: int,
) -> list[Bar]:
    """The bars of ``tf`` aggregated from the source rows of each segment, oldest first.

    ``rows`` are each source's bars oldest first. Bars starting before
    ``complete_from`` (where the source answers begin) are left out: they would
    hold only part of their interval. The newest bar may be partial: it ends at
    the cut.
    """
    clock = BarClock(tf)
    built: dict[int, list[Any]] = {}  # start -> [open, high, low, close, volume]
    for source, lo, hi in parts:
        for row in rows.get(source, ()):
            if not lo <= row.start < hi:
                continue
            start = clock.start_of(row.start)
            agg = built.get(start)
            if agg is None:
                built[start] = [row.open, row.high, row.low, row.close, row.volume]
            else:
                agg[1] = max(agg[1], row.high)
                agg[2] = min(agg[2], row.low)
                agg[3] = row.close
                agg[4] = min(agg[4] + row.volume, _INT64 - 1)  # held, as a live bar's volume
    return [
        Bar(contract, tf.name, start, o, h, low, c, v, trades=0, source="history")
        for start, (o, h, low, c, v) in sorted(built.items())
        if start >= complete_from
    ]


def first_whole_bar(tf: Timeframe, ts_us: int) -> int:
    """The first bar start of ``tf`` at or after ``ts_us``."""
    clock = BarClock(tf)
    lo, hi = clock.bounds(ts_us)
    return lo if lo == ts_us else hi
