"""The pure side of the history actor: when a gap opens, what to ask for, what to keep.

Nothing here waits or keeps state, so every rule of the theory of operation
(the hub-state table, the window of a request, the checks one history bar must
pass) is a plain function of its arguments.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from protocols import gateway as gw
from protocols.messages import Bar
from protocols.timeframes import BarClock, Timeframe

from .config import LONGEST_US

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


def initial_start(tf: Timeframe, now_us: int, initial_bars: int, min_lookback: float) -> int:
    """Start of the start-up window: far enough back to find ``initial_bars`` bars."""
    reach = initial_bars * LONGEST_US[tf.unit] * tf.n
    return now_us - round(reach * _CALENDAR_PER_TRADING + min_lookback * 1e6)


def bar_before(tf: Timeframe, ts_us: int) -> int:
    """Start of the bar before the one that contains ``ts_us``."""
    clock = BarClock(tf)
    return clock.start_of(clock.start_of(ts_us) - 1)


def iso(ts_us: int) -> str:
    return (_EPOCH + ts_us * _ONE_US).isoformat()


def to_bar(
    contract: str, tf: Timeframe, clock: BarClock, item: Any, window: tuple[int, int]
) -> Bar | str:
    """One history bar as a ``Bar``, or the reason (one of ``REJECTS``) it is refused."""
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
    except (ValueError, OverflowError):
        return "time"
    if lo != start:
        return "unaligned"
    if hi > window[1]:
        return "partial"
    return Bar(contract, tf.name, start, o, h, low, c, v, trades=0)
