"""Bar boundaries: literal UTC instants for every rule, DST nights included."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocols.timeframes as timeframes
from protocols.errors import ConfigError
from protocols.timeframes import BarClock, Timeframe, bar_end, bar_start, parse_timeframe


def us(text: str) -> int:
    """'2025-03-09T07:00' (UTC) → µs since the epoch."""
    dt = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M")


def consecutive(tf: str, first: str, count: int) -> list[str]:
    """ISO starts of ``count`` consecutive bars from the one containing ``first``."""
    frame = parse_timeframe(tf)
    start = bar_start(frame, us(first))
    out = []
    for _ in range(count):
        out.append(iso(start))
        start = bar_end(frame, start)
    return out


# ------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "unit", "n"),
    [
        ("1sec", "sec", 1),
        ("5sec", "sec", 5),
        ("10sec", "sec", 10),
        ("15sec", "sec", 15),
        ("30sec", "sec", 30),
        ("2sec", "sec", 2),
        ("1min", "min", 1),
        ("5min", "min", 5),
        ("15min", "min", 15),
        ("20min", "min", 20),
        ("30min", "min", 30),
        ("60min", "min", 60),
        ("1hr", "hr", 1),
        ("2hr", "hr", 2),
        ("3hr", "hr", 3),
        ("4hr", "hr", 4),
        ("6hr", "hr", 6),
        ("8hr", "hr", 8),
        ("12hr", "hr", 12),
        ("24hr", "hr", 24),
        ("1day", "day", 1),
        ("1week", "week", 1),
        ("1month", "month", 1),
    ],
)
def test_parse_good(text: str, unit: str, n: int) -> None:
    assert parse_timeframe(text) == Timeframe(name=text, unit=unit, n=n)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "min",
        "0min",
        "7min",
        "45sec",
        "90sec",
        "5hr",
        "48hr",
        "2day",
        "2week",
        "3month",
        "1year",
        "1 min",
        " 1min",
        "1min\n",
        "1MIN",
        "01min",
        "-1min",
        "1.5min",
        "\u0661min",  # Arabic-Indic digit one
        "9" * 1000 + "min",
    ],
)
def test_parse_bad(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid timeframe"):
        parse_timeframe(text)


@pytest.mark.parametrize("value", [None, 5, 1.0, b"1min", ["1min"]])
def test_parse_wrong_type(value: object) -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        parse_timeframe(value)  # type: ignore[arg-type]


def test_parse_error_lists_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"7min.*1min, 2min, 3min, 4min, 5min, 6min, 10min"):
        parse_timeframe("7min")


def test_fixed_us() -> None:
    assert parse_timeframe("15sec").fixed_us == 15_000_000
    assert parse_timeframe("5min").fixed_us == 300_000_000
    assert parse_timeframe("1hr").fixed_us == 3_600_000_000
    assert parse_timeframe("4hr").fixed_us == 0
    assert parse_timeframe("1day").fixed_us == 0


# ------------------------------------------------------------ floor frames


def test_sub_hour_frames_floor_utc() -> None:
    ts = us("2025-03-09T07:37:12.345678")
    assert iso(bar_start(parse_timeframe("1sec"), ts)) == "2025-03-09T07:37"
    assert bar_start(parse_timeframe("1sec"), ts) == us("2025-03-09T07:37:12")
    assert bar_start(parse_timeframe("15sec"), ts) == us("2025-03-09T07:37:00")
    assert bar_start(parse_timeframe("5min"), ts) == us("2025-03-09T07:35")
    assert bar_end(parse_timeframe("5min"), us("2025-03-09T07:35")) == us("2025-03-09T07:40")
    assert bar_start(parse_timeframe("30min"), ts) == us("2025-03-09T07:30")
    assert bar_start(parse_timeframe("1hr"), ts) == us("2025-03-09T07:00")
    # the boundary belongs to the new bar, one µs before to the old
    assert bar_start(parse_timeframe("1min"), us("2025-03-09T07:38")) == us("2025-03-09T07:38")
    assert bar_start(parse_timeframe("1min"), us("2025-03-09T07:38") - 1) == us("2025-03-09T07:37")


def test_1hr_is_utc_floor_across_both_dst_nights() -> None:
    assert consecutive("1hr", "2025-03-09T06:10", 5) == [
        "2025-03-09T06:00",
        "2025-03-09T07:00",
        "2025-03-09T08:00",  # 02:00 CST does not exist: 03:00 CDT
        "2025-03-09T09:00",
        "2025-03-09T10:00",
    ]
    assert consecutive("1hr", "2025-11-02T05:10", 5) == [
        "2025-11-02T05:00",
        "2025-11-02T06:00",  # 01:00 CDT
        "2025-11-02T07:00",  # 01:00 CST, the repeated hour
        "2025-11-02T08:00",
        "2025-11-02T09:00",
    ]


# -------------------------------------------------------- wall-clock hours


def test_4hr_from_17_chicago_in_cst() -> None:
    # January: CST = UTC-6; local 17, 21, 01, 05, 09, 13
    assert consecutive("4hr", "2025-01-15T23:30", 6) == [
        "2025-01-15T23:00",
        "2025-01-16T03:00",
        "2025-01-16T07:00",
        "2025-01-16T11:00",
        "2025-01-16T15:00",
        "2025-01-16T19:00",
    ]


def test_4hr_from_17_chicago_in_cdt() -> None:
    # July: CDT = UTC-5
    assert consecutive("4hr", "2025-07-15T22:30", 6) == [
        "2025-07-15T22:00",
        "2025-07-16T02:00",
        "2025-07-16T06:00",
        "2025-07-16T10:00",
        "2025-07-16T14:00",
        "2025-07-16T18:00",
    ]


def test_4hr_spring_forward_bar_is_3h() -> None:
    assert consecutive("4hr", "2025-03-08T19:30", 6) == [
        "2025-03-08T19:00",  # 13:00 CST
        "2025-03-08T23:00",  # 17:00 CST
        "2025-03-09T03:00",  # 21:00 CST
        "2025-03-09T07:00",  # 01:00 CST ... 05:00 CDT: 3 h
        "2025-03-09T10:00",  # 05:00 CDT
        "2025-03-09T14:00",  # 09:00 CDT
    ]


def test_4hr_fall_back_bar_is_5h() -> None:
    assert consecutive("4hr", "2025-11-01T18:30", 6) == [
        "2025-11-01T18:00",  # 13:00 CDT
        "2025-11-01T22:00",  # 17:00 CDT
        "2025-11-02T02:00",  # 21:00 CDT
        "2025-11-02T06:00",  # 01:00 CDT (first occurrence) ... 05:00 CST: 5 h
        "2025-11-02T11:00",  # 05:00 CST
        "2025-11-02T15:00",  # 09:00 CST
    ]


def test_3hr_nonexistent_boundary_takes_next_valid_instant() -> None:
    # 3hr boundaries 17, 20, 23, 02, 05: 02:00 on 2025-03-09 does not exist
    assert consecutive("3hr", "2025-03-09T02:30", 4) == [
        "2025-03-09T02:00",  # 20:00 CST
        "2025-03-09T05:00",  # 23:00 CST
        "2025-03-09T08:00",  # "02:00" → 03:00 CDT, the jump itself
        "2025-03-09T10:00",  # 05:00 CDT
    ]
    assert consecutive("3hr", "2025-11-02T01:30", 4) == [
        "2025-11-02T01:00",  # 20:00 CDT
        "2025-11-02T04:00",  # 23:00 CDT ... 02:00 CST: 4 h
        "2025-11-02T08:00",  # 02:00 CST
        "2025-11-02T11:00",  # 05:00 CST
    ]


@pytest.mark.parametrize("tf", ["1min", "1hr", "2hr", "3hr", "4hr", "1day"])
@pytest.mark.parametrize("night", ["2025-03-09T00:00", "2025-11-02T00:00"])
def test_dst_night_drops_and_merges_nothing(tf: str, night: str) -> None:
    """One trade per minute for 16 h: each in exactly one bar, bars tile time."""
    frame = parse_timeframe(tf)
    bars: dict[int, list[int]] = {}
    for minute in range(16 * 60):
        ts = us(night) + minute * 60_000_000 + 17
        start = bar_start(frame, ts)
        assert start <= ts < bar_end(frame, start)
        bars.setdefault(start, []).append(ts)
    starts = sorted(bars)
    for a, b in itertools.pairwise(starts):
        assert bar_end(frame, a) == b  # no gap, no overlap
    assert sum(map(len, bars.values())) == 16 * 60


# ----------------------------------------------------------- trading days


def test_1day_starts_17_the_day_before() -> None:
    day = parse_timeframe("1day")
    # Tuesday 2025-01-14 10:00 CST
    assert bar_start(day, us("2025-01-14T16:00")) == us("2025-01-13T23:00")
    assert bar_end(day, us("2025-01-13T23:00")) == us("2025-01-14T23:00")
    # 16:59:59 CST is still that day, 17:00 the next one
    assert bar_start(day, us("2025-01-14T22:59:59")) == us("2025-01-13T23:00")
    assert bar_start(day, us("2025-01-14T23:00")) == us("2025-01-14T23:00")
    # July (CDT)
    assert bar_start(day, us("2025-07-15T15:00")) == us("2025-07-14T22:00")


def test_1day_on_dst_days_is_23h_and_25h() -> None:
    assert consecutive("1day", "2025-03-08T23:30", 3) == [
        "2025-03-08T23:00",  # trading day Sunday 03-09: 23 h
        "2025-03-09T22:00",
        "2025-03-10T22:00",
    ]
    assert consecutive("1day", "2025-11-01T22:30", 3) == [
        "2025-11-01T22:00",  # trading day Sunday 11-02: 25 h
        "2025-11-02T23:00",
        "2025-11-03T23:00",
    ]


def test_sunday_evening_trade_is_in_mondays_trading_day_and_week() -> None:
    sunday_evening = us("2025-03-02T23:30")  # Sunday 17:30 CST
    assert bar_start(parse_timeframe("1day"), sunday_evening) == us("2025-03-02T23:00")
    assert bar_end(parse_timeframe("1day"), us("2025-03-02T23:00")) == us("2025-03-03T23:00")
    assert bar_start(parse_timeframe("1week"), sunday_evening) == us("2025-03-02T23:00")
    assert bar_start(parse_timeframe("4hr"), sunday_evening) == us("2025-03-02T23:00")


def test_1week_starts_sunday_17_before_monday() -> None:
    week = parse_timeframe("1week")
    # Wednesday 2025-03-12: the week of Monday 03-10 starts Sunday 03-09 17:00 CDT
    assert bar_start(week, us("2025-03-12T15:00")) == us("2025-03-09T22:00")
    assert bar_end(week, us("2025-03-09T22:00")) == us("2025-03-16T22:00")
    # Friday 15:59 CST is the last trading minute of the week before
    assert bar_start(week, us("2025-03-07T21:59")) == us("2025-03-02T23:00")
    # the weekend (no trades in practice) stays in the ending week, so start <= ts
    assert bar_start(week, us("2025-03-08T12:00")) == us("2025-03-02T23:00")
    assert bar_start(week, us("2025-03-09T21:59")) == us("2025-03-02T23:00")


def test_1month_starts_17_the_day_before_the_1st() -> None:
    month = parse_timeframe("1month")
    assert bar_start(month, us("2025-03-15T12:00")) == us("2025-02-28T23:00")
    assert bar_end(month, us("2025-02-28T23:00")) == us("2025-03-31T22:00")  # CDT by then
    # 2025-02-28 17:30 CST is already March; 16:59 still February
    assert bar_start(month, us("2025-02-28T23:30")) == us("2025-02-28T23:00")
    assert bar_start(month, us("2025-02-28T22:59")) == us("2025-01-31T23:00")
    # December → January of the next year
    assert bar_end(month, bar_start(month, us("2025-12-10T12:00"))) == us("2025-12-31T23:00")
    assert consecutive("1month", "2025-12-10T12:00", 3) == [
        "2025-11-30T23:00",
        "2025-12-31T23:00",
        "2026-01-31T23:00",
    ]


def test_out_of_range_timestamp_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="outside the supported date range"):
        bar_start(parse_timeframe("1day"), 10**20)


# --------------------------------------------------------------- the clock


def test_bar_clock_recomputes_only_when_leaving_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = timeframes.bar_bounds

    def counting(tf: Timeframe, ts: int) -> tuple[int, int]:
        calls.append(ts)
        return real(tf, ts)

    monkeypatch.setattr(timeframes, "bar_bounds", counting)
    clock = BarClock(parse_timeframe("4hr"))
    base = us("2025-03-09T07:00")
    for second in range(0, 3 * 3600, 7):  # the whole 3 h bar, then the next
        assert clock.start_of(base + second * 1_000_000) == base
    assert clock.start_of(us("2025-03-09T10:00")) == us("2025-03-09T10:00")
    assert clock.bounds(us("2025-03-09T10:01")) == (us("2025-03-09T10:00"), us("2025-03-09T14:00"))
    assert len(calls) == 2


YEARS_2000_2040 = st.integers(us("2000-01-01T00:00"), us("2040-01-01T00:00"))
ALL = ["1sec", "10sec", "1min", "5min", "30min", "1hr", "2hr", "3hr", "4hr", "6hr", "8hr", "12hr"]


@given(ts=YEARS_2000_2040, tf=st.sampled_from([*ALL, "24hr", "1day", "1week", "1month"]))
def test_bars_tile_time(ts: int, tf: str) -> None:
    frame = parse_timeframe(tf)
    start = bar_start(frame, ts)
    end = bar_end(frame, start)
    assert start <= ts < end
    assert bar_start(frame, end) == end
    assert bar_start(frame, end - 1) == start
    assert BarClock(frame).start_of(ts) == start
