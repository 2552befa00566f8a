"""Timeframes and bar boundaries: which bar a trade timestamp belongs to.

Theory of operation
-------------------
A timeframe maps every instant to exactly one half-open interval
``[start, end)`` of UTC microseconds, and consecutive intervals tile time:
``bar_end(tf, s) == bar_start(tf, bar_end(tf, s))``. Nothing is dropped or
merged, not even on the nights the exchange clock jumps.

There are two kinds of frame:

* frames that divide one hour (``sec``, ``min``, ``1hr``) are the same in
  every time zone with whole-hour offsets: ``start = floor(ts, frame)`` in UTC,
  pure integer arithmetic.
* longer frames (``2hr`` … ``12hr``, ``1day``, ``1week``, ``1month``) follow
  the exchange's wall clock in America/Chicago, where the trading day opens at
  17:00. Their boundaries are computed as local wall times and converted to
  UTC: an ambiguous wall time (the repeated hour in November) takes its first
  occurrence, a non-existent one (the skipped hour in March) the next valid
  instant. A 4hr bar on a DST night therefore lasts 3 h or 5 h, a 1day bar
  23 h or 25 h.

Trading day: the Chicago date of ``local time + 7 h`` (17:00 local is 00:00 of
the next trading day). A week is the ISO week of the trading day and starts at
17:00 on the Sunday before its Monday; a month is the calendar month of the
trading day and starts at 17:00 on the day before the 1st. A trading day on a
Saturday or Sunday (a trade from Friday 17:00 to Sunday 17:00 local; none in
practice) stays in the week that is ending, the ISO rule: moving it to the
following week would put the trade before its bar's start.

Wall-clock frames need zoneinfo, which costs microseconds, so hot paths go
through ``BarClock``: it remembers the last interval and recomputes only when
a timestamp leaves it — once per bar, not once per trade.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from protocols.errors import ConfigError

Unit = Literal["sec", "min", "hr", "day", "week", "month"]

EXCHANGE_TZ: Final = ZoneInfo("America/Chicago")
SESSION_OPEN: Final = time(17, 0)
# local time + this = a wall time whose date is the trading day
_TRADING_DAY_SHIFT: Final = timedelta(hours=24 - SESSION_OPEN.hour)

_UNIT_US: Final = {"sec": 1_000_000, "min": 60_000_000, "hr": 3_600_000_000}
# the largest N of each unit: N must divide the next unit up
_UNIT_SPAN: Final = {"sec": 60, "min": 60, "hr": 24, "day": 1, "week": 1, "month": 1}
_HOUR_US: Final = 3_600_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_ONE_DAY: Final = timedelta(days=1)
_SYNTAX: Final = re.compile(r"([1-9][0-9]{0,3})(sec|min|hr|day|week|month)")


class Timeframe(msgspec.Struct, frozen=True):
    """A bar length: ``name`` is canonical (``f"{n}{unit}"``), e.g. ``"4hr"``."""

    name: str
    unit: Unit
    n: int

    @property
    def fixed_us(self) -> int:
        """The length in µs of a frame that divides one hour, else 0 (wall-clock frame)."""
        step = _UNIT_US.get(self.unit, 0) * self.n
        return step if 0 < step <= _HOUR_US else 0


def parse_timeframe(text: str) -> Timeframe:
    """``"5min"`` → ``Timeframe("5min", "min", 5)``; anything else raises ``ConfigError``."""
    if not isinstance(text, str):
        raise ConfigError(f"timeframe must be a string like '5min', got {type(text).__name__}")
    match = _SYNTAX.fullmatch(text)
    if match is None:
        raise ConfigError(
            f"invalid timeframe {text[:40]!r}: expected N followed by sec, min, hr, day, "
            "week or month, e.g. 1sec, 5min, 4hr, 1day"
        )
    n, unit = int(match[1]), match[2]
    span = _UNIT_SPAN[unit]
    if span % n:
        allowed = ", ".join(f"{d}{unit}" for d in range(1, span + 1) if span % d == 0)
        raise ConfigError(f"invalid timeframe {text!r}: {unit} frames must be one of {allowed}")
    return Timeframe(name=text, unit=unit, n=n)  # type: ignore[arg-type]


def bar_start(tf: Timeframe, ts_us: int) -> int:
    """Start (µs UTC) of the bar of ``tf`` that contains ``ts_us``."""
    return bar_bounds(tf, ts_us)[0]


def bar_end(tf: Timeframe, start_us: int) -> int:
    """End (µs UTC, exclusive) of the bar that starts at ``start_us``: the next bar's start."""
    return bar_bounds(tf, start_us)[1]


def bar_bounds(tf: Timeframe, ts_us: int) -> tuple[int, int]:
    """``(start, end)`` in µs UTC of the bar of ``tf`` containing ``ts_us``."""
    step = tf.fixed_us
    if step:
        start = ts_us - ts_us % step
        return start, start + step
    try:  # near year 1 or 9999 the wall clock's bar edges overflow, not only the time
        wall = (_EPOCH + ts_us * _ONE_US).astimezone(EXCHANGE_TZ).replace(tzinfo=None)
        lo, hi = _wall_bounds(tf, wall)
        return _wall_to_us(lo), _wall_to_us(hi)
    except OverflowError:
        raise ValueError(f"timestamp {ts_us} µs is outside the supported date range") from None


def _wall_bounds(tf: Timeframe, wall: datetime) -> tuple[datetime, datetime]:
    """The bar around local wall time ``wall``, as naive local wall times (end exclusive)."""
    if tf.unit == "hr":  # n divides 24 and n > 1: boundaries every n h from 17:00
        hour = wall.replace(minute=0, second=0, microsecond=0)
        lo = hour - timedelta(hours=(wall.hour - SESSION_OPEN.hour) % tf.n)
        return lo, lo + timedelta(hours=tf.n)
    day = (wall + _TRADING_DAY_SHIFT).date()
    if tf.unit == "day":
        first, last = day, day
    elif tf.unit == "week":
        first = day - timedelta(days=day.weekday())
        last = first + timedelta(days=6)
    else:  # month
        first = day.replace(day=1)
        last = (first + timedelta(days=31)).replace(day=1) - _ONE_DAY
    return _session_open(first - _ONE_DAY), _session_open(last)


def _session_open(d: date) -> datetime:
    return datetime.combine(d, SESSION_OPEN)


def _wall_to_us(wall: datetime) -> int:
    """Local wall time → µs UTC; ambiguous → first occurrence, non-existent → next valid instant."""
    first = wall.replace(tzinfo=EXCHANGE_TZ, fold=0)
    us: int = (first - _EPOCH) // _ONE_US
    if (_EPOCH + us * _ONE_US).astimezone(EXCHANGE_TZ).replace(tzinfo=None) == wall:
        return us
    # In a gap fold=0 applies the offset from before the jump, which lands past
    # it; fold=1 applies the later offset and lands before it. The jump itself,
    # the first instant whose wall time is >= ``wall``, lies between: bisect on
    # whole seconds (tz transitions happen on whole seconds).
    before: int = (wall.replace(tzinfo=EXCHANGE_TZ, fold=1) - _EPOCH) // _ONE_US
    lo, hi = before // 1_000_000, -(-us // 1_000_000)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        mid_wall = datetime.fromtimestamp(mid, EXCHANGE_TZ).replace(tzinfo=None)
        if mid_wall >= wall:
            hi = mid
        else:
            lo = mid
    return hi * 1_000_000


class BarClock:
    """``bar_bounds`` with a one-interval cache: zoneinfo runs once per bar, not per trade.

    ``lo``/``hi`` are public so a hot loop can test ``lo <= ts < hi`` inline.
    """

    __slots__ = ("hi", "lo", "tf")

    def __init__(self, tf: Timeframe) -> None:
        self.tf = tf
        self.lo = 0
        self.hi = 0  # empty interval: the first lookup computes

    def bounds(self, ts_us: int) -> tuple[int, int]:
        if self.lo <= ts_us < self.hi:
            return self.lo, self.hi
        self.lo, self.hi = bar_bounds(self.tf, ts_us)
        return self.lo, self.hi

    def start_of(self, ts_us: int) -> int:
        if self.lo <= ts_us < self.hi:
            return self.lo
        return self.bounds(ts_us)[0]
