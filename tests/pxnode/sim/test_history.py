"""History/retrieveBars: exactly the aggregate of the emitted trades, newest first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from protocols.gateway import (
    ENCODER,
    BarUnit,
    HistoryBar,
    RetrieveBarsRequest,
    RetrieveBarsResponse,
)
from pxnode.sim.contracts import DEFAULT_CONTRACTS
from pxnode.sim.history import MAX_BARS, SYNTHETIC_DAYS, SyntheticHistory, retrieve_bars
from pxnode.sim.market import MarketSim, iso, parse_time

START = 1_764_000_000.0  # 2025-11-24T16:00:00Z, on a minute
MNQ = "CON.F.US.MNQ.Z25"


def market(
    seed: int = 1, rate: float = 20.0, run: float = 600.0
) -> tuple[MarketSim, SyntheticHistory]:
    sim = MarketSim(seed, rate=rate, start=START)
    sim.advance(START + run)
    return sim, SyntheticHistory(seed, list(DEFAULT_CONTRACTS), START, rate)


def ask(
    sim: MarketSim,
    synthetic: SyntheticHistory,
    start: float,
    end: float,
    unit: int = BarUnit.MINUTE,
    number: int = 1,
    *,
    now: float | None = None,
    limit: int = 1000,
    partial: bool = True,
    contract: str = MNQ,
) -> RetrieveBarsResponse:
    request = RetrieveBarsRequest(
        contract, False, iso(int(start * 1e6)), iso(int(end * 1e6)), unit, number, limit, partial
    )
    return retrieve_bars(sim, synthetic, request, sim.now if now is None else now)


def bars_of(*args: Any, **kwargs: Any) -> list[HistoryBar]:
    """The bars of a successful ``ask``."""
    bars = ask(*args, **kwargs).bars
    assert bars is not None
    return bars


def aggregate(sim: MarketSim, lo: float, hi: float) -> tuple[float, float, float, float, int]:
    trades = sim.recent_trades(MNQ, since=lo, until=hi)
    prices = [t.price for t in trades]
    return prices[0], max(prices), min(prices), prices[-1], sum(t.volume for t in trades)


def test_minute_bars_are_the_aggregate_of_emitted_trades_newest_first() -> None:
    sim, synthetic = market(rate=50.0)
    answer = ask(sim, synthetic, START, START + 600)
    assert answer.success and answer.bars is not None and len(answer.bars) == 10
    starts = [parse_time(b.t) / 1e6 for b in answer.bars]
    assert starts == sorted(starts, reverse=True) and starts[-1] == START
    for bar, lo in zip(answer.bars, starts, strict=True):
        assert (bar.o, bar.h, bar.l, bar.c, bar.v) == aggregate(sim, lo, lo + 60)
        assert bar.t.endswith("+00:00")


def test_every_unit_agrees_with_the_seconds_it_is_made_of() -> None:
    sim, synthetic = market(rate=3.0, run=3 * 3600)
    hours = bars_of(sim, synthetic, START, START + 3 * 3600, BarUnit.HOUR)
    minutes = bars_of(sim, synthetic, START, START + 3 * 3600, BarUnit.MINUTE, limit=MAX_BARS)
    assert len(hours) == 3 and len(minutes) == 180
    for i, hour in enumerate(reversed(hours)):
        part = list(reversed(minutes))[60 * i : 60 * i + 60]
        assert hour.o == part[0].o and hour.c == part[-1].c
        assert hour.h == max(b.h for b in part) and hour.l == min(b.l for b in part)
        assert hour.v == sum(b.v for b in part)
    seconds = bars_of(sim, synthetic, START, START + 60, BarUnit.SECOND, limit=MAX_BARS)
    assert sum(b.v for b in seconds) == minutes[-1].v


def test_limit_and_partial_bar() -> None:
    sim, synthetic = market(run=150)  # now is 30 s into the third minute
    with_partial = bars_of(sim, synthetic, START, START + 180, limit=2)
    assert [parse_time(b.t) / 1e6 for b in with_partial] == [START + 120, START + 60]
    without = bars_of(sim, synthetic, START, START + 180, partial=False)
    assert [parse_time(b.t) / 1e6 for b in without] == [START + 60, START]


def test_synthetic_history_before_start_ends_at_the_start_price() -> None:
    sim, synthetic = market(run=60)
    bars = bars_of(sim, synthetic, START - 3600, START + 60)
    assert len(bars) == 61
    newest_synthetic = bars[1]
    assert parse_time(newest_synthetic.t) / 1e6 == START - 60
    assert newest_synthetic.c == DEFAULT_CONTRACTS[0].start_price
    for older, newer in zip(bars[2:], bars[1:-1], strict=True):
        assert older.c == newer.o  # continuous
        assert older.l <= min(older.o, older.c) <= max(older.o, older.c) <= older.h
        assert older.v >= 1
    again = bars_of(*market(run=60), START - 3600, START)
    assert again == bars[1:]  # deterministic for a seed
    other = bars_of(*market(seed=2, run=60), START - 3600, START)
    assert other != bars[1:]


def test_synthetic_history_has_a_horizon_and_no_seconds() -> None:
    sim, synthetic = market(run=1)
    assert bars_of(sim, synthetic, START - 120, START, BarUnit.SECOND) == []
    far = START - (SYNTHETIC_DAYS + 5) * 86400
    assert bars_of(sim, synthetic, far, far + 3600) == []


def test_a_day_bar_straddling_the_start_adds_both_sources() -> None:
    sim, synthetic = market(run=300)
    day = bars_of(sim, synthetic, START - 2 * 86400, START + 86400, BarUnit.DAY, now=START + 300)
    assert day
    minutes = bars_of(sim, synthetic, parse_time(day[0].t) / 1e6, START + 300, limit=MAX_BARS)
    assert day[0].v == sum(b.v for b in minutes)


@pytest.mark.parametrize(
    ("unit", "number", "code"),
    [
        (0, 1, 2),  # UnitInvalid
        (7, 1, 2),
        (2, 0, 3),  # UnitNumberInvalid
        (3, 7, 3),
        (4, 2, 3),
    ],
)
def test_unsupported_frames_are_refused_with_the_gateways_codes(
    unit: int, number: int, code: int
) -> None:
    answer = ask(*market(run=1), START, START + 60, unit, number)
    assert (answer.success, answer.error_code, answer.error_message, answer.bars) == (
        False,
        code,
        None,
        None,
    )
    wire = ENCODER.encode(answer)
    assert b'"bars":null' in wire and b'"errorMessage":null' in wire


def test_bad_requests_are_refused_not_raised() -> None:
    sim, synthetic = market(run=1)
    assert ask(sim, synthetic, START, START + 60, limit=0).error_code == 4  # LimitInvalid
    assert ask(sim, synthetic, START, START + 60, limit=MAX_BARS + 1).error_code == 4
    assert ask(sim, synthetic, START, START + 60, contract="CON.F.US.NOPE").error_code == 1
    bad_time = RetrieveBarsRequest(MNQ, False, "yesterday", "2025-11-24T16:00:00Z", 2, 1, 10, True)
    assert retrieve_bars(sim, synthetic, bad_time, START).bars == []
    huge = RetrieveBarsRequest(
        MNQ, False, "0001-01-01T00:00:00", "9999-12-31T00:00:00", 4, 1, 10, True
    )
    assert retrieve_bars(sim, synthetic, huge, START).success  # the far past is empty, not an error
    assert bars_of(sim, synthetic, START + 60, START) == []  # empty range


def test_longer_bars_are_aligned_the_gateways_way_not_the_exchange_sessions() -> None:
    """Days at 00:00 UTC (not 17:00 Chicago), 4 h on UTC multiples, weeks on Sunday, months
    on the 1st: a client must not take them for session bars."""
    sim, synthetic = market(run=600)
    now = START + 600

    def starts(unit: int, number: int = 1, days: int = 40) -> list[datetime]:
        bars = bars_of(sim, synthetic, START - days * 86400, now, unit, number, now=now) or []
        return [datetime.fromtimestamp(parse_time(b.t) / 1e6, UTC) for b in bars]

    days = starts(BarUnit.DAY)
    assert days and all((d.hour, d.minute) == (0, 0) for d in days)
    assert days[0] == datetime(2025, 11, 24, tzinfo=UTC)
    assert all(d.hour % 4 == 0 for d in starts(BarUnit.HOUR, 4, days=2))
    assert all(d.weekday() == 6 and d.hour == 0 for d in starts(BarUnit.WEEK))
    assert all(d.day == 1 and d.hour == 0 for d in starts(BarUnit.MONTH))


def test_bars_are_wire_shaped() -> None:
    bars = bars_of(*market(run=60), START, START + 60)
    assert bars and all(isinstance(b, HistoryBar) and isinstance(b.v, int) for b in bars)
