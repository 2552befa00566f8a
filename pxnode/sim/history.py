"""History/retrieveBars: bars aggregated from what the market actually traded.

Theory of operation
-------------------
A bar is an aggregate of rows ``(second, o, h, l, c, v)`` in time order, grouped
by ``protocols.timeframes`` (the same boundaries the node's bars actor uses, so a
back-fill lines up with live bars). Rows come from two sources:

* after the sim started: the sim's own 1-second aggregates of every trade it
  emitted (``MarketSim.seconds``), kept for its retention window; older sim
  history is gone (a gap, as after a data purge);
* before the sim started: synthetic 1-minute bars, a seeded random walk run
  backwards from each contract's start price, so the past ends exactly where the
  live market begins. It reaches back ``SYNTHETIC_DAYS`` and has no second-level
  detail (second bars exist only for sim time).

A bar straddling the start simply aggregates rows of both. Bars are those whose
start lies in ``[startTime, endTime)``, each aggregated over its whole interval;
a bar whose interval has not ended at ``now`` is partial. Newest first, at most
``limit`` (1..``MAX_BARS``), the newest kept.

Alignment is the gateway's, not pxnode's: every bar starts at floor(UTC time,
its length) for seconds, minutes and hours (so a 4hr bar starts at 00:00,
04:00, … UTC, not at 17:00 Chicago), a day at 00:00 UTC, a week on Sunday
00:00 UTC, a month on the 1st 00:00 UTC. A client that took these for
exchange-session bars would be wrong, as it would be against the real gateway.
Failures are answered the gateway's way: ``success: false``, its
RetrieveBarErrorCode (1 ContractNotFound, 2 UnitInvalid, 3 UnitNumberInvalid,
4 LimitInvalid), ``errorMessage: null`` and ``bars: null``.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias

from protocols.gateway import BarUnit, HistoryBar, RetrieveBarsRequest, RetrieveBarsResponse
from protocols.timeframes import Timeframe
from pxnode.sim.contracts import ContractSpec
from pxnode.sim.market import MarketSim, iso, parse_time

MAX_BARS: Final = 20_000
SYNTHETIC_DAYS: Final = 30
CONTRACT_NOT_FOUND: Final = 1  # RetrieveBarErrorCode
UNIT_INVALID: Final = 2
UNIT_NUMBER_INVALID: Final = 3
LIMIT_INVALID: Final = 4
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_STEP_US: Final = {"sec": 1_000_000, "min": 60_000_000, "hr": 3_600_000_000}

_UNITS: Final = {
    BarUnit.SECOND: ("sec", 3600),
    BarUnit.MINUTE: ("min", 60),
    BarUnit.HOUR: ("hr", 24),
    BarUnit.DAY: ("day", 1),
    BarUnit.WEEK: ("week", 1),
    BarUnit.MONTH: ("month", 1),
}
Row: TypeAlias = tuple[int, float, float, float, float, int]


class _Refused(ValueError):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def timeframe(unit: int, number: int) -> Timeframe:
    """The frame of ``unitNumber`` times ``unit``; ``_Refused`` with the gateway's code.

    Seconds and minutes take any count up to an hour; hours must divide a day;
    days, weeks and months come one at a time.
    """
    try:
        name, most = _UNITS[BarUnit(unit)]
    except ValueError:
        raise _Refused(UNIT_INVALID) from None
    if not 1 <= number <= most or (name == "hr" and 24 % number):
        raise _Refused(UNIT_NUMBER_INVALID)
    return Timeframe(f"{number}{name}", name, number)  # type: ignore[arg-type]


def gateway_bounds(tf: Timeframe, ts_us: int) -> tuple[int, int]:
    """``(start, end)`` µs of the gateway's bar of ``tf`` around ``ts_us`` (UTC alignment)."""
    step = _STEP_US.get(tf.unit)
    if step is not None:
        step *= tf.n
        start = ts_us - ts_us % step
        return start, start + step
    day = (_EPOCH + ts_us * _ONE_US).replace(hour=0, minute=0, second=0, microsecond=0)
    if tf.unit == "day":
        first, last = day, day + timedelta(days=1)
    elif tf.unit == "week":
        first = day - timedelta(days=(day.weekday() + 1) % 7)  # the Sunday on or before
        last = first + timedelta(days=7)
    else:
        first = day.replace(day=1)
        last = (first + timedelta(days=32)).replace(day=1)
    return (first - _EPOCH) // _ONE_US, (last - _EPOCH) // _ONE_US


class SyntheticHistory:
    """Seeded 1-minute bars before ``start``, generated backwards on demand and kept.

    Minute k (k >= 1) covers ``[m0 - 60k, m0 - 60(k-1))`` with ``m0`` the start's
    minute; its close is minute k-1's open, and minute 1 closes at the start price.
    """

    def __init__(self, seed: int, contracts: list[ContractSpec], start: float, rate: float):
        self.m0 = int(start) // 60 * 60
        total = sum(spec.weight for spec in contracts)
        self._walks = {
            spec.id: _Walk(
                random.Random(f"{seed}/history/{spec.id}"), spec, rate * spec.weight / total
            )
            for spec in contracts
        }

    def rows(self, contract: str, lo_s: int, hi_s: int) -> Iterator[Row]:
        """Minute rows starting in ``[lo_s, hi_s)``, oldest first."""
        walk = self._walks[contract]
        first = max(1, (self.m0 - hi_s) // 60 + 1)  # newest minute k starting before hi_s
        last = min(SYNTHETIC_DAYS * 1440, (self.m0 - lo_s + 59) // 60)  # oldest starting >= lo_s
        if first > last:
            return
        walk.extend(last)
        price = walk.spec.tick_size
        digits = walk.spec.decimals
        for k in range(last, first - 1, -1):
            i = k - 1
            yield (
                self.m0 - 60 * k,
                round(walk.o[i] * price, digits),
                round(walk.h[i] * price, digits),
                round(walk.l[i] * price, digits),
                round(walk.c[i] * price, digits),
                walk.v[i],
            )


class _Walk:
    __slots__ = ("c", "h", "l", "o", "rng", "spec", "v", "volume")

    def __init__(self, rng: random.Random, spec: ContractSpec, rate: float) -> None:
        self.rng, self.spec = rng, spec
        self.volume = max(1.0, rate * 60 * 1.8)  # mean contracts a minute at this rate
        self.o, self.h, self.l, self.c, self.v = (array("q") for _ in range(5))

    def extend(self, minutes: int) -> None:
        rng = self.rng
        close = self.o[-1] if self.o else round(self.spec.start_price / self.spec.tick_size)
        while len(self.o) < minutes:
            step = round(rng.gauss(0.0, 4.0))
            open_ = max(2, close - step)
            self.o.append(open_)
            self.c.append(close)
            self.h.append(max(open_, close) + int(rng.expovariate(0.5)))
            self.l.append(max(1, min(open_, close) - int(rng.expovariate(0.5))))
            self.v.append(max(1, int(rng.expovariate(1.0 / self.volume))))
            close = open_


def _sim_rows(sim: MarketSim, contract: str, lo_s: int, hi_s: int) -> Iterator[Row]:
    bars = sim.seconds(contract)
    for i in bars.between(lo_s, hi_s):
        yield bars.secs[i], bars.o[i], bars.h[i], bars.l[i], bars.c[i], bars.v[i]


def _fail(code: int) -> RetrieveBarsResponse:
    return RetrieveBarsResponse(success=False, error_code=code, error_message=None, bars=None)


def retrieve_bars(
    sim: MarketSim, synthetic: SyntheticHistory, request: RetrieveBarsRequest, now: float
) -> RetrieveBarsResponse:
    """Answer one History/retrieveBars request at wall time ``now`` (unix seconds)."""
    if request.contract_id not in sim:
        return _fail(CONTRACT_NOT_FOUND)
    try:
        tf = timeframe(request.unit, request.unit_number)
    except _Refused as exc:
        return _fail(exc.code)
    if not 1 <= request.limit <= MAX_BARS:
        return _fail(LIMIT_INVALID)
    try:
        lo_us, hi_us = parse_time(request.start_time), parse_time(request.end_time)
        top = gateway_bounds(tf, hi_us - 1)[1]  # rows up to the end of the last bar in range
    except (ValueError, OverflowError):
        return RetrieveBarsResponse(bars=[])
    if hi_us <= lo_us:
        return RetrieveBarsResponse(bars=[])
    lo_s, top_s = -(-lo_us // 1_000_000), -(-top // 1_000_000)
    start_s = int(sim.start)
    rows: list[Row] = []
    if tf.unit != "sec":
        rows.extend(synthetic.rows(request.contract_id, lo_s, min(top_s, start_s)))
    rows.extend(_sim_rows(sim, request.contract_id, max(lo_s, start_s), top_s))
    now_us = int(now * 1_000_000)
    bars: list[HistoryBar] = []
    current: list[float] = []  # start, end, o, h, l, c, v of the bar being built

    def flush() -> None:
        start, end = int(current[0]), int(current[1])
        if lo_us <= start < hi_us and (request.include_partial_bar or end <= now_us):
            t = iso(start).replace(".000", "")
            bars.append(
                HistoryBar(t, current[2], current[3], current[4], current[5], int(current[6]))
            )

    for sec, o, h, low, c, v in rows:
        start, end = gateway_bounds(tf, sec * 1_000_000)
        if current and current[0] == start:
            current[3] = max(current[3], h)
            current[4] = min(current[4], low)
            current[5] = c
            current[6] += v
            continue
        if current:
            flush()
        current = [start, end, o, h, low, c, v]
    if current:
        flush()
    bars.reverse()
    return RetrieveBarsResponse(bars=bars[: request.limit])
