"""The bars actor, driven by scripted inbox batches and Ticks (virtual time)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import polars as pl
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.bars import LATENCY_SAMPLES, BarsActor
from actors.bars.book import MAX_COVERED, Series
from protocols.errors import ConfigError
from protocols.messages import (
    BackfillBars,
    BackfillStarted,
    Bar,
    BarClosed,
    BarUpdated,
    CountersReported,
    CutPassed,
    Flush,
    GetBars,
    Request,
    Stop,
    Tick,
    Trade,
    TradesAccepted,
)
from pxnode.testing import FakeContext, RecordingRef, ScriptedInbox
from supervisors.mailbox import Mailbox, MailboxSpec, OverflowPolicy
from supervisors.ref import MailboxRef
from supervisors.topic import Topic

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MNQ = "CON.F.US.MNQ.Z25"
MES = "CON.F.US.MES.Z25"


def us(text: str) -> int:
    dt = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return (dt - EPOCH) // timedelta(microseconds=1)


def sec(text: str) -> float:
    return us(text) / 1e6


def trade(ts: int | str, price: float, volume: int = 1, contract: str = MNQ) -> Trade:
    ts_us = us(ts) if isinstance(ts, str) else ts
    return Trade(contract, ts_us, price, volume, 0, ts_us / 1e6)


def trades(*items: Trade) -> TradesAccepted:
    return TradesAccepted(list(items))


# -------------------------------------------------------------- test doubles


class BarsContext(FakeContext):
    """The bars actor's context: its topic, stats and history recorded, a settable wall clock."""

    def __init__(self) -> None:
        refs = [RecordingRef(name) for name in ("topic.bars", "stats", "history")]
        super().__init__("bars", refs, wall=lambda: self.now)
        self.now = 1_000.0

    @property
    def out(self) -> list[Any]:
        return self.told("topic.bars")

    @property
    def reports(self) -> list[CountersReported]:
        return self.told("stats")


async def run_actor(
    batches: Sequence[Sequence[Any]], timeframes: Sequence[str] = ("1min",), **kw: Any
) -> tuple[BarsActor, BarsContext]:
    actor = BarsActor(timeframes, **kw)
    ctx = BarsContext()
    await actor.run(ScriptedInbox(*batches), ctx)
    return actor, ctx


def ohlcvt(bar: Bar) -> tuple[float, float, float, float, int, int]:
    return (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trades)


def final_bars(messages: list[Any]) -> dict[tuple[str, str, int], Bar]:
    final: dict[tuple[str, str, int], Bar] = {}
    for msg in messages:
        if isinstance(msg, BarUpdated | BarClosed):
            final[msg.bar.contract, msg.bar.timeframe, msg.bar.start] = msg.bar
    return final


def kinds(messages: list[Any]) -> list[tuple[str, str, bool]]:
    return [
        (
            type(m).__name__,
            datetime.fromtimestamp(m.bar.start / 1e6, UTC).strftime("%H:%M"),
            getattr(m, "closed", False),
        )
        for m in messages
    ]


# ------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("args", "kw", "match"),
    [
        ((["7min"],), {}, "invalid timeframe"),
        (([],), {}, "non-empty list"),
        (("1min",), {}, "non-empty list"),
        ((["1min"],), {"ring_size": 0}, "ring_size"),
        ((["1min"],), {"ring_size": 2.5}, "ring_size"),
        ((["1min"],), {"grace": -1.0}, "grace"),
        ((["1min"],), {"grace": math.nan}, "grace"),
        ((["1min"],), {"grace": math.inf}, "grace"),
        ((["1min"],), {"grace": "5"}, "grace"),
        ((["1min"],), {"report_interval": 0}, "report_interval"),
        ((["1min"],), {"report_interval": -1.0}, "report_interval"),
        ((["1min"],), {"report_interval": math.nan}, "report_interval"),
        ((["1min"],), {"report_interval": math.inf}, "report_interval"),
        ((["1min"],), {"report_interval": "1"}, "report_interval"),
    ],
)
def test_bad_config(args: tuple[Any, ...], kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BarsActor(*args, **kw)


def test_duplicate_timeframes_are_one() -> None:
    assert [tf.name for tf in BarsActor(["1min", "4hr", "1min"]).timeframes] == ["1min", "4hr"]


# ---------------------------------------------------------------- semantics


@pytest.mark.trio
async def test_open_close_by_timestamp_ties_by_arrival() -> None:
    arrivals = [
        trade("2025-01-15T15:00:10", 101.0),
        trade("2025-01-15T15:00:05", 100.0),  # earliest: the open
        trade("2025-01-15T15:00:05", 99.0),  # same time, arrived later: not the open
        trade("2025-01-15T15:00:50", 105.0),
        trade("2025-01-15T15:00:50", 104.0, volume=3),  # same time, arrived later: the close
        trade("2025-01-15T15:00:30", 98.0),
    ]
    expected = (100.0, 105.0, 98.0, 104.0, 8, 6)
    # one message, one message per trade, one batch per trade: all the same
    for batches in (
        [[trades(*arrivals)]],
        [[trades(t) for t in arrivals]],
        [[trades(t)] for t in arrivals],
    ):
        _, ctx = await run_actor(batches)
        (bar,) = final_bars(ctx.out).values()
        assert ohlcvt(bar) == expected
        assert bar.start == us("2025-01-15T15:00")


@pytest.mark.trio
async def test_updates_are_coalesced_per_bar_and_batch() -> None:
    batch = [
        trades(trade("2025-01-15T15:00:01", 1.0), trade("2025-01-15T15:00:02", 2.0)),
        trades(trade("2025-01-15T15:00:03", 3.0, contract=MES)),
        trades(trade("2025-01-15T15:00:04", 4.0)),
    ]
    _, ctx = await run_actor([batch, [Stop()]], ("1min", "5min"))
    updates = [m for m in ctx.out if isinstance(m, BarUpdated)]
    assert sorted((m.bar.contract, m.bar.timeframe) for m in updates) == [
        (MES, "1min"),
        (MES, "5min"),
        (MNQ, "1min"),
        (MNQ, "5min"),
    ]
    mnq = next(m.bar for m in updates if m.bar.contract == MNQ)
    assert ohlcvt(mnq) == (1.0, 4.0, 1.0, 4.0, 3, 3)


@pytest.mark.trio
async def test_timer_closes_at_end_plus_grace() -> None:
    _, ctx = await run_actor(
        [
            [trades(trade("2025-01-15T15:00:30", 10.0))],
            [Tick(sec("2025-01-15T15:01:04.999"))],  # end 15:01 + 5 s grace not reached
            [Tick(sec("2025-01-15T15:01:05"))],  # exactly end + grace: closes
            [trades(trade("2025-01-15T15:00:40", 11.0))],  # so this is a correction
        ],
        grace=5.0,
    )
    assert kinds(ctx.out) == [
        ("BarUpdated", "15:00", False),
        ("BarClosed", "15:00", False),
        ("BarUpdated", "15:00", True),
    ]
    assert ohlcvt(ctx.out[1].bar) == (10.0, 10.0, 10.0, 10.0, 1, 1)


@pytest.mark.trio
async def test_closing_is_per_contract_and_timeframe() -> None:
    _, ctx = await run_actor(
        [
            [
                trades(trade("2025-01-15T15:00:30", 10.0), trade("2025-01-15T15:01:30", 11.0)),
                trades(trade("2025-01-15T15:01:40", 20.0, contract=MES)),
                Tick(sec("2025-01-15T15:01:50")),
            ],
        ],
        ("1min", "5min"),
    )
    closed = [
        (m.bar.contract, m.bar.timeframe, m.bar.start) for m in ctx.out if type(m) is BarClosed
    ]
    assert closed[0] == (MNQ, "1min", us("2025-01-15T15:00"))
    # at the Stop (inbox end) the rest closes, in start order per series
    assert sorted(closed[1:]) == [
        (MES, "1min", us("2025-01-15T15:01")),
        (MES, "5min", us("2025-01-15T15:00")),
        (MNQ, "1min", us("2025-01-15T15:01")),
        (MNQ, "5min", us("2025-01-15T15:00")),
    ]


@pytest.mark.trio
async def test_late_trade_corrects_a_closed_bar() -> None:
    actor, ctx = await run_actor(
        [
            [trades(trade("2025-01-15T15:00:30", 10.0), trade("2025-01-15T15:01:10", 12.0))],
            [Tick(sec("2025-01-15T15:01:15"))],  # closes 15:00
            [trades(trade("2025-01-15T15:00:59", 9.0, volume=4))],  # late: amends 15:00
            [trades(trade("2025-01-15T15:00:01", 11.0))],  # late and earliest: new open
            [Stop()],
        ]
    )
    assert kinds(ctx.out) == [
        ("BarUpdated", "15:00", False),
        ("BarUpdated", "15:01", False),
        ("BarClosed", "15:00", False),
        ("BarUpdated", "15:00", True),
        ("BarUpdated", "15:00", True),
        ("BarClosed", "15:01", False),
    ]
    assert ohlcvt(ctx.out[3].bar) == (10.0, 10.0, 9.0, 9.0, 5, 2)
    assert ohlcvt(ctx.out[4].bar) == (11.0, 11.0, 9.0, 9.0, 6, 3)
    assert actor.counters["late_trades"] == 2
    assert actor.counters["bars_corrected"] == 2
    assert actor.counters["bars_closed"] == 2


@pytest.mark.trio
async def test_late_trade_into_an_empty_past_bar_opens_and_closes_it() -> None:
    _, ctx = await run_actor(
        [
            [trades(trade("2025-01-15T15:00:30", 10.0), trade("2025-01-15T15:02:10", 12.0))],
            [Tick(sec("2025-01-15T15:02:20"))],
            [trades(trade("2025-01-15T15:01:30", 11.0))],  # 15:01 never had a trade
            [trades(trade("2025-01-15T15:01:40", 12.0))],
        ]
    )
    assert kinds(ctx.out)[3:] == [
        ("BarUpdated", "15:01", False),
        ("BarClosed", "15:01", False),  # already due: closed in the same batch
        ("BarUpdated", "15:01", True),  # so the next late trade is a correction
        ("BarClosed", "15:02", False),  # the inbox ended
    ]


@pytest.mark.trio
async def test_late_trade_beyond_a_tiny_ring_is_counted() -> None:
    actor, ctx = await run_actor(
        [
            [trades(*(trade(us("2025-01-15T15:00") + s * 1_000_000, 10.0) for s in range(5)))],
            [Tick(sec("2025-01-15T15:00:10"))],  # closes 5 one-second bars, ring keeps 2
            [trades(trade("2025-01-15T15:00:00.5", 99.0))],
        ],
        ("1sec",),
        ring_size=2,
    )
    assert actor.counters["late_beyond_ring"] == 1
    assert 99.0 not in {b.high for b in final_bars(ctx.out).values()}


@pytest.mark.trio
async def test_stop_flushes_forming_bars_and_ignores_the_rest() -> None:
    _, ctx = await run_actor(
        [
            [
                trades(trade("2025-01-15T15:00:30", 10.0)),
                Stop(),
                trades(trade("2025-01-15T15:00:31", 1.0)),
            ],
            [trades(trade("2025-01-15T15:00:32", 2.0))],
        ],
        ("1min", "4hr"),
    )
    assert [(type(m).__name__, m.bar.timeframe) for m in ctx.out] == [
        ("BarUpdated", "1min"),
        ("BarUpdated", "4hr"),
        ("BarClosed", "1min"),
        ("BarClosed", "4hr"),
    ]
    assert all(m.bar.low == 10.0 for m in ctx.out)


@pytest.mark.trio
async def test_unknown_and_bad_messages_are_counted() -> None:
    replies = RecordingRef("reply")
    actor, ctx = await run_actor(
        [[object(), "junk", Tick(math.nan), Tick(math.inf), Request(body=Stop(), reply=replies)]]
    )
    assert actor.counters["unknown_messages"] == 5
    assert replies.told == [] and ctx.out == []


@pytest.mark.trio
async def test_stats_report_counters_and_latency() -> None:
    actor = BarsActor(["1min"])
    ctx = BarsContext()
    ctx.now = sec("2025-01-15T15:00:30") + 0.25  # 250 ms after the trade was received
    inbox = ScriptedInbox([trades(trade("2025-01-15T15:00:30", 10.0))], [Tick(ctx.now)])
    await actor.run(inbox, ctx)
    first, last = ctx.reports
    assert first.source == "bars"
    assert first.counters["trades_aggregated"] == 1
    assert first.latencies["trade_to_bar"] == [pytest.approx(0.25)]
    assert last.counters["bars_closed"] == 1 and last.latencies["trade_to_bar"] == []


class PacedInbox(ScriptedInbox):
    """Hands out one batch every ``pace`` seconds (virtual time)."""

    def __init__(self, batches: Sequence[Sequence[Any]], pace: float) -> None:
        super().__init__(*batches)
        self._pace = pace

    async def receive_batch(self, limit: int) -> list[Any]:
        await trio.sleep(self._pace)
        return await super().receive_batch(limit)


@pytest.mark.trio
async def test_reports_at_most_once_per_interval_of_the_runtime_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Ticks a tape minute apart, four per second of the runtime clock: Tick.now
    # does not pace reports, the clock does.
    t0 = sec("2025-01-15T15:00:00")
    batches = [
        [trades(trade(int((t0 + 60 * k) * 1e6), 10.0)), Tick(t0 + 60 * k)] for k in range(10)
    ]
    actor = BarsActor(["1min"], report_interval=1.0)
    ctx = BarsContext()
    await actor.run(PacedInbox(batches, pace=0.25), ctx)
    # ticks at 0.25, 0.5, ..., 2.5 s: reports at 0.25, 1.25, 2.25, then the final one
    assert [r.counters["trades_aggregated"] for r in ctx.reports] == [1, 5, 9, 10]
    assert [len(r.latencies["trade_to_bar"]) for r in ctx.reports] == [1, 4, 4, 1]
    assert ctx.reports[-1].counters["bars_closed"] == 10


@pytest.mark.trio
async def test_latency_samples_are_bounded_and_none_is_lost_between_ticks() -> None:
    t0 = us("2025-01-15T15:00:00")
    batches = [[trades(trade(t0 + k, 10.0))] for k in range(LATENCY_SAMPLES + 5)]
    _, ctx = await run_actor(batches)
    samples = [len(r.latencies["trade_to_bar"]) for r in ctx.reports]
    assert samples == [LATENCY_SAMPLES, 5]  # a full list is reported without a Tick


# ---------------------------------------------------------------- backfill


def hist(
    start: str, o: float, h: float, low: float, c: float, v: int = 10, tf: str = "1min"
) -> Bar:
    return Bar(MNQ, tf, us(start), o, h, low, c, v, 0, source="history")


def backfill(tf: str, bars: list[Bar], since: str, cut: str) -> BackfillBars:
    return BackfillBars(MNQ, tf, bars, since=us(since), cut=us(cut))


CUT = "2025-01-15T15:02:30"


@pytest.mark.trio
async def test_history_replaces_the_live_bars_of_its_window_and_rejects_bad_bars() -> None:
    history: list[Any] = [
        hist("2025-01-15T14:59", 1.0, 2.0, 0.5, 1.5),
        hist("2025-01-15T15:01", 3.0, 4.0, 2.0, 3.5),
        hist("2025-01-15T15:00:30", 1.0, 1.0, 1.0, 1.0),  # not aligned to 1min
        hist("2025-01-15T15:00", math.nan, 1.0, 1.0, 1.0),  # bad price
        hist("2025-01-15T15:00", 1.0, 1.0, 2.0, 1.0),  # low above high
        hist("2025-01-15T15:00", 1.0, 1.0, 1.0, 1.0, v=-1),  # negative volume
        hist("2025-01-15T15:00", 1.0, 1.0, 1.0, 1.0, v=2**63),  # beyond the Int64 column
        hist("2025-01-15T14:58", 1.0, 1.0, 1.0, 1.0),  # before its window
        "not a bar",
    ]
    replies = RecordingRef("reply")
    actor, ctx = await run_actor(
        [
            [BackfillStarted(MNQ, ["1min", "7min"], us(CUT))],
            [trades(trade("2025-01-15T15:01:10", 50.0))],  # seen live, only part of 15:01
            [trades(trade("2025-01-15T15:02:10", 60.0), trade("2025-01-15T15:02:40", 61.0))],
            [backfill("1min", history, "2025-01-15T14:59", CUT)],
            [backfill("1min", history[:2], "2025-01-15T14:59", CUT)],  # stale: the cut was used
            [trades(trade("2025-01-15T15:01:20", 99.0))],  # history has it: not again
            [Request(body=GetBars(MNQ, "1min", 10), reply=replies)],
        ]
    )
    assert actor.counters["backfill_inserted"] == 2  # 14:59, 15:01
    assert actor.counters["backfill_kept"] == 1  # 15:02: history lacks it, live trades built it
    assert actor.counters["backfill_rejected"] == 7
    assert actor.counters["backfill_stale"] == 1
    assert actor.counters["trades_before_cut"] == 1
    (frame,) = replies.told
    assert frame["start"].dt.strftime("%H:%M").to_list() == ["14:59", "15:01", "15:02"]
    # 15:01 is history's (the live partial bar is gone); 15:02 is the live bar, as it was told
    assert frame["close"].to_list() == [1.5, 3.5, 61.0]
    assert frame["volume"].to_list() == [10, 10, 2]
    closed = [m.bar for m in ctx.out if type(m) is BarClosed and m.bar.source == "history"]
    assert [b.start for b in closed][:2] == [us("2025-01-15T14:59"), us("2025-01-15T15:01")]


@pytest.mark.trio
async def test_the_forming_bar_is_history_before_the_cut_plus_live_trades_after_it() -> None:
    """Node up at 15:01:40; 1hr history of 15:00..15:02:30, live trades counted once."""
    partial = hist("2025-01-15T15:00", 100.0, 130.0, 90.0, 120.0, v=500, tf="1hr")
    replies = RecordingRef("reply")
    actor, ctx = await run_actor(
        [
            [BackfillStarted(MNQ, ["1hr"], us(CUT))],
            # before the cut: also in history (seen live only in part)
            [trades(trade("2025-01-15T15:01:40", 118.0, 5), trade("2025-01-15T15:02:29", 121.0))],
            # from the cut on: only live trades know them
            [trades(trade("2025-01-15T15:02:30", 140.0, 2), trade("2025-01-15T15:03:00", 80.0, 3))],
            [backfill("1hr", [partial], "2025-01-15T15:00", CUT)],
            [trades(trade("2025-01-15T15:02:00", 500.0))],  # late, before the cut: counted
            [trades(trade("2025-01-15T15:04:00", 125.0, 4))],
            [Request(body=GetBars(MNQ, "1hr", 5), reply=replies)],
        ],
        timeframes=("1hr",),
    )
    (frame,) = replies.told
    assert frame.height == 1
    row = frame.row(0, named=True)
    assert (row["open"], row["high"], row["low"], row["close"]) == (100.0, 140.0, 80.0, 125.0)
    assert row["volume"] == 500 + 2 + 3 + 4
    assert row["trades"] == 3  # the live ones; history gives no count
    assert actor.counters["trades_before_cut"] == 1
    updates = [m.bar for m in ctx.out if type(m) is BarUpdated]
    assert updates[-1].source == "merged"
    assert updates[-1].start_time == datetime(2025, 1, 15, 15, tzinfo=UTC)


@pytest.mark.trio
async def test_history_hears_once_when_a_live_trade_reached_the_cut() -> None:
    """The gateway's clock passed the cut when one of its trades at or after it came in:
    history asks for the bars before the cut only then (its clock may be behind ours)."""
    _, ctx = await run_actor(
        [
            [BackfillStarted(MNQ, ["1hr"], us(CUT))],
            [trades(trade("2025-01-15T15:02:29", 121.0))],  # before the cut: not yet
            [trades(trade("2025-01-15T15:02:30", 140.0), trade("2025-01-15T15:03:00", 80.0))],
            [trades(trade("2025-01-15T15:04:00", 125.0))],
        ],
        timeframes=("1hr",),
    )
    assert ctx.told("history") == [CutPassed(MNQ, us(CUT))]


@pytest.mark.trio
async def test_each_series_keeps_its_own_cut_and_history_hears_of_every_one() -> None:
    """A series added at run time gets a cut of its own while an older one still waits
    for its cut: each is history before its own cut plus the live trades after it, and
    history hears of both cuts passed (it heard only of the newest, and waited the older
    one out, max_clock_lag)."""
    later = "2025-01-15T15:02:45"
    minute_bars = [hist("2025-01-15T15:02", 9.0, 9.0, 9.0, 9.0, 7)]
    hour_bars = [hist("2025-01-15T15:00", 8.0, 9.5, 8.0, 9.5, 50, "1hr")]
    replies = RecordingRef("reply")
    actor, ctx = await run_actor(
        [
            [BackfillStarted(MNQ, ["1min"], us(CUT))],
            [BackfillStarted(MNQ, ["1hr"], us(later))],  # added: the 1min series keeps CUT
            [trades(trade("2025-01-15T15:02:20", 10.0), trade("2025-01-15T15:02:35", 11.0))],
            [trades(trade("2025-01-15T15:02:50", 12.0))],
            [backfill("1min", minute_bars, "2025-01-15T15:02", CUT)],
            [backfill("1hr", hour_bars, "2025-01-15T15:00", later)],
            [trades(trade("2025-01-15T15:02:40", 13.0))],  # late: in 1hr's history, not 1min's
            [Request(GetBars(MNQ, "1min", 5), replies), Request(GetBars(MNQ, "1hr", 5), replies)],
        ],
        timeframes=("1min", "1hr"),
    )
    minute, hour = (frame.row(-1, named=True) for frame in replies.told)
    assert (minute["open"], minute["close"], minute["volume"]) == (9.0, 12.0, 7 + 3)
    assert (hour["open"], hour["close"], hour["volume"]) == (8.0, 12.0, 50 + 1)
    assert ctx.told("history") == [CutPassed(MNQ, us(CUT)), CutPassed(MNQ, us(later))]
    assert actor.counters["trades_before_cut"] == 1


def answer_lacking_a_live_bar() -> list[list[Any]]:
    """1sec bar 15:00:05 built live and closed (told), then a back-fill up to 15:00:10
    whose answer has 15:00:04 only."""
    cut = "2025-01-15T15:00:10"
    answer = [hist("2025-01-15T15:00:04", 99.0, 99.0, 99.0, 99.0, 1, "1sec")]
    return [
        [BackfillStarted(MNQ, ["1sec"], us(cut))],
        [trades(trade("2025-01-15T15:00:05.0001", 100.0, 2))],
        [Tick(now=sec("2025-01-15T15:00:07"))],  # closes 15:00:05: told
        [backfill("1sec", answer, "2025-01-15T15:00", cut)],
    ]


@pytest.mark.trio
async def test_a_live_bar_the_back_fill_lacks_is_kept_as_it_was_told() -> None:
    """The answer had no bar where live trades had built and closed one (an answer that
    ends early, a hole in the gateway's history, a bar of it rejected): the live bar left
    the book, no subscriber heard, and its trades vanished uncounted (found by a hunt).
    Silence is no evidence that nothing traded: the bar is kept, as the stream has it."""
    replies = RecordingRef("reply")
    actor, ctx = await run_actor(
        [*answer_lacking_a_live_bar(), [Request(GetBars(MNQ, "1sec", 10), replies)]],
        timeframes=("1sec",),
    )
    (frame,) = replies.told
    book = {round(row[2].timestamp() * 1e6): row[3:] for row in frame.rows()}  # o h l c v t
    told = {start: ohlcvt(bar) for (_, _, start), bar in final_bars(ctx.out).items()}
    expected = {
        us("2025-01-15T15:00:04"): (99.0, 99.0, 99.0, 99.0, 1, 0),
        us("2025-01-15T15:00:05"): (100.0, 100.0, 100.0, 100.0, 2, 1),
    }
    assert book == told == expected
    assert actor.counters["backfill_kept"] == 1 and actor.counters["backfill_inserted"] == 1


@pytest.mark.trio
async def test_late_trades_into_a_window_reach_the_bars_the_back_fill_lacked() -> None:
    """The window was history's whole: a late trade into a bar its answer lacked (kept,
    or never there) was counted ``trades_before_cut`` and dropped, yet no history bar
    holds it. One into a bar history gave is history's, as before."""
    replies = RecordingRef("reply")
    actor, _ = await run_actor(
        [
            *answer_lacking_a_live_bar(),
            [
                trades(
                    trade("2025-01-15T15:00:05.5", 101.0, 3),  # into the kept bar
                    trade("2025-01-15T15:00:06.5", 102.0, 4),  # into no bar of the answer
                    trade("2025-01-15T15:00:04.5", 98.0, 5),  # history's: counted already
                )
            ],
            [Request(GetBars(MNQ, "1sec", 10), replies)],
        ],
        timeframes=("1sec",),
    )
    (frame,) = replies.told
    book = {round(row[2].timestamp() * 1e6): row[3:8] for row in frame.rows()}  # o h l c v
    assert book == {
        us("2025-01-15T15:00:04"): (99.0, 99.0, 99.0, 99.0, 1),
        us("2025-01-15T15:00:05"): (100.0, 101.0, 100.0, 101.0, 5),
        us("2025-01-15T15:00:06"): (102.0, 102.0, 102.0, 102.0, 4),
    }
    assert actor.counters["trades_before_cut"] == 1


@pytest.mark.trio
async def test_a_failed_back_fill_keeps_the_live_bars_and_releases_the_cut() -> None:
    replies = RecordingRef("reply")
    actor, _ = await run_actor(
        [
            [BackfillStarted(MNQ, ["1min"], us(CUT))],
            [trades(trade("2025-01-15T15:02:10", 60.0), trade("2025-01-15T15:02:40", 61.0))],
            [backfill("1min", [], CUT, CUT)],
            [Request(body=GetBars(MNQ, "1min", 10), reply=replies)],
        ]
    )
    (frame,) = replies.told
    assert frame["volume"].to_list() == [2]
    assert actor.counters["backfill_stale"] == 0


@pytest.mark.trio
@pytest.mark.parametrize(
    ("since", "before_cut"),
    [(CUT, 0), ("2025-01-15T15:02", 1)],
    ids=["failed-back-fill", "gap-of-one-bar"],
)
async def test_only_what_history_covered_is_left_out_of_a_late_trade(
    since: str, before_cut: int
) -> None:
    """History covers [since, cut), not everything before the cut: a late trade before
    ``since`` (a failed back-fill covers nothing) was dropped as counted by history."""
    replies = RecordingRef("reply")
    gap = [hist("2025-01-15T15:02", 60.0, 60.0, 60.0, 60.0, v=7)] if since != CUT else []
    actor, _ = await run_actor(
        [
            [BackfillStarted(MNQ, ["1min"], us(CUT))],
            [trades(trade("2025-01-15T15:02:40", 61.0))],
            [backfill("1min", gap, since, CUT)],
            [trades(trade("2025-01-15T15:01:50", 50.0), trade("2025-01-15T15:02:10", 55.0))],
            [Request(body=GetBars(MNQ, "1min", 10), reply=replies)],
        ]
    )
    (frame,) = replies.told
    assert frame["start"].dt.strftime("%H:%M").to_list() == ["15:01", "15:02"]
    assert frame["volume"].to_list() == [1, 7 + 1 if gap else 2]
    assert actor.counters["trades_before_cut"] == before_cut


def test_history_windows_merge_when_they_touch_and_stay_bounded() -> None:
    series = Series(MNQ, "1min", 10)
    series.cover(10, 20)
    series.cover(20, 30)  # touching: one window
    series.cover(5, 5)  # empty: nothing
    assert series.covered == [(10, 30)]
    series.cover(40, 50)
    series.cover(0, 12)
    assert series.covered == [(0, 30), (40, 50)] and series.covered_to == 50
    assert series.in_history(0) and series.in_history(29) and not series.in_history(35)
    for k in range(20):
        series.cover(100 + 10 * k, 105 + 10 * k)
    assert len(series.covered) == MAX_COVERED and series.covered[-1] == (290, 295)
    assert series.in_history(292) and not series.in_history(295) and not series.in_history(40)


@pytest.mark.trio
async def test_bars_are_answered_in_start_order_a_late_forming_bar_among_closed_ones() -> None:
    replies = RecordingRef("reply")
    await run_actor(
        [
            [trades(trade("2025-01-15T15:00:10", 1.0), trade("2025-01-15T15:02:10", 2.0))],
            [Tick(now=sec("2025-01-15T15:03:30"))],  # both closed
            # a late trade into a bar never seen: forming until the batch ends
            [trades(trade("2025-01-15T15:01:10", 3.0)), Request(GetBars(MNQ, "1min", 2), replies)],
        ]
    )
    (frame,) = replies.told
    assert frame["start"].dt.strftime("%H:%M").to_list() == ["15:01", "15:02"]


@pytest.mark.trio
async def test_live_trade_amends_a_backfilled_bar() -> None:
    _, ctx = await run_actor(
        [
            [BackfillStarted(MNQ, ["1min"], us("2025-01-15T15:01:30"))],
            [
                backfill(
                    "1min",
                    [hist("2025-01-15T15:01", 3.0, 4.0, 2.0, 3.5)],
                    "2025-01-15T15:01",
                    "2025-01-15T15:01:30",
                )
            ],
            [trades(trade("2025-01-15T15:01:30", 4.5, volume=2))],
        ]
    )
    last = [m for m in ctx.out if isinstance(m, BarUpdated)][-1]
    assert not last.closed  # the partial bar was forming: the trade completes it
    assert ohlcvt(last.bar) == (3.0, 4.5, 2.0, 4.5, 12, 1)
    assert last.bar.source == "merged"


# ----------------------------------------------------------------- GetBars


@pytest.mark.trio
async def test_get_bars_frame_schema_and_order() -> None:
    replies = RecordingRef("reply")
    ask = [
        Request(body=GetBars(MNQ, "1min", 2), reply=replies),
        Request(body=GetBars(MNQ, "1min", 100), reply=replies),
        Request(body=GetBars(MNQ, "1min", 0), reply=replies),
        Request(body=GetBars(MNQ, "1min", "3"), reply=replies),  # type: ignore[arg-type]
        Request(body=GetBars(MES, "1min", 5), reply=replies),
        Request(body=GetBars(MNQ, "2min", 5), reply=replies),
    ]
    await run_actor(
        [
            [trades(*(trade(f"2025-01-15T15:0{m}:10", 10.0 + m) for m in range(4)))],
            [Tick(sec("2025-01-15T15:02:30"))],  # 15:00, 15:01 closed; 15:02, 15:03 forming
            ask,
        ],
        ring_size=1,
    )
    last2, everything, *empties = replies.told
    assert everything.schema == pl.Schema(
        {  # type: ignore[arg-type]  # polars' stubs reject a dict of mixed dtype values
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
    )
    assert everything.rows() == [
        (MNQ, "1min", datetime(2025, 1, 15, 15, m, tzinfo=UTC), p, p, p, p, 1, 1)
        for m, p in ((1, 11.0), (2, 12.0), (3, 13.0))  # ring_size=1 keeps 15:01 only
    ]
    assert last2.rows() == everything.rows()[1:]
    assert [e.shape for e in empties] == [(0, 9)] * 4
    assert all(e.schema == everything.schema for e in empties)


# ------------------------------------------------------ the real mailbox


@pytest.mark.trio
async def test_runs_on_a_real_mailbox_until_it_closes() -> None:
    mailbox: Mailbox[Any] = Mailbox("bars", MailboxSpec(capacity=8))
    for m in range(3):
        mailbox.send_nowait(trades(trade(f"2025-01-15T15:0{m}:10", 10.0 + m)))
    mailbox.close()
    actor = BarsActor(["1min"])
    ctx = BarsContext()
    await actor.run(mailbox, ctx)
    assert [type(m).__name__ for m in ctx.out] == ["BarUpdated"] * 3 + ["BarClosed"] * 3
    mailbox.dispose()


# ------------------------------------------------------------ emission


def many_bars_batch(n: int) -> list[Any]:
    """One batch whose emission is ``n`` BarUpdated (one per contract)."""
    return [trades(*(trade("2025-01-15T15:00:10", 10.0, contract=f"C{i}") for i in range(n)))]


class FullEveryThirdRef(RecordingRef):
    """``tell_nowait`` raises ``WouldBlock`` (delivering nothing) on every third call."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.calls = 0
        self.awaited = 0

    async def tell(self, msg: Any) -> None:
        self.awaited += 1
        await trio.lowlevel.checkpoint()
        self.told.append(msg)

    def tell_nowait(self, msg: Any) -> None:
        self.calls += 1
        if self.calls % 3 == 0:
            raise anyio.WouldBlock
        self.told.append(msg)


@pytest.mark.trio
async def test_bars_are_told_without_a_wait_until_the_topic_is_full() -> None:
    _, roomy = await run_actor([many_bars_batch(10)])
    assert len(roomy.out) == 20  # 10 updates, 10 closes at the end
    ctx = BarsContext()
    topic = ctx.refs["topic.bars"] = FullEveryThirdRef("topic.bars")
    await BarsActor(["1min"]).run(ScriptedInbox(*[many_bars_batch(10)]), ctx)
    assert ctx.out == roomy.out  # the same messages, in the same order, once each
    assert (topic.calls, topic.awaited) == (20, 6)  # only a full topic was awaited


@pytest.mark.trio
async def test_a_slow_block_subscriber_gets_every_bar_once_in_order() -> None:
    _, reference = await run_actor([many_bars_batch(50), many_bars_batch(5)])
    topic: Topic[Any] = Topic("topic.bars")
    got: list[Any] = []
    ctx = BarsContext()
    ctx.refs["topic.bars"] = topic
    with (
        topic.subscribe("slow", MailboxSpec(2)) as slow,
        topic.subscribe("ui", MailboxSpec(1, OverflowPolicy.DROP_OLDEST)),
    ):
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                async for msg in slow:
                    got.append(msg)
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(consume)
            inbox = ScriptedInbox(*[many_bars_batch(50), many_bars_batch(5)])
            await BarsActor(["1min"]).run(inbox, ctx)
            topic.close()
    assert got == reference.out


class EagerInbox(ScriptedInbox):
    """Hands out its batches without ever yielding: the actor must yield itself."""

    async def receive_batch(self, limit: int) -> list[Any]:
        return self.batches.pop(0)[:limit] if self.batches else []


@pytest.mark.trio
async def test_yields_after_every_batch_that_told_something() -> None:
    ctx = BarsContext()
    seen: list[int] = []
    batches = [[trades(trade(f"2025-01-15T15:0{m}:10", 10.0))] for m in range(4)]
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            while True:
                seen.append(len(ctx.out))
                await trio.lowlevel.checkpoint()

        nursery.start_soon(watch)
        await trio.lowlevel.checkpoint()
        await BarsActor(["1min"]).run(EagerInbox(*batches), ctx)
        nursery.cancel_scope.cancel()
    # the watcher ran between batches: it saw the topic part-way through
    assert set(seen) & {1, 2, 3}


# ------------------------------------------------------------- property


CHICAGO = ZoneInfo("America/Chicago")
FIXED = {"1sec": 1_000_000, "1min": 60_000_000, "5min": 300_000_000, "1hr": 3_600_000_000}
WALL_HOURS = {"3hr": 3, "4hr": 4}


def reference_start(tf: str, ts: int) -> int:
    """The §5 rules written out plainly, straight on zoneinfo."""
    if tf in FIXED:
        return ts - ts % FIXED[tf]
    local = (EPOCH + timedelta(microseconds=ts)).astimezone(CHICAGO).replace(tzinfo=None)
    if tf in WALL_HOURS:
        n = WALL_HOURS[tf]
        wall = local.replace(minute=0, second=0, microsecond=0)
        wall -= timedelta(hours=(local.hour - 17) % n)
    else:
        day = (local + timedelta(hours=7)).date()
        if tf == "1week":
            day -= timedelta(days=day.weekday())
        if tf == "1month":
            day = day.replace(day=1)
        wall = datetime.combine(day - timedelta(days=1), time(17))
    # fold=0 = first occurrence; in Chicago the only skipped boundary (02:00, 3hr)
    # maps with fold=0 to 03:00 CDT, the next valid instant
    return (wall.replace(tzinfo=CHICAGO) - EPOCH) // timedelta(microseconds=1)


def reference_bars(accepted: list[Trade], tfs: Sequence[str]) -> dict[tuple[str, str, int], Bar]:
    groups: dict[tuple[str, str, int], list[tuple[int, int, Trade]]] = {}
    for arrival, t in enumerate(accepted):
        for tf in tfs:
            groups.setdefault((t.contract, tf, reference_start(tf, t.ts)), []).append(
                (t.ts, arrival, t)
            )
    out = {}
    for key, items in groups.items():
        items.sort()
        prices = [t.price for _, _, t in items]
        out[key] = Bar(
            key[0],
            key[1],
            key[2],
            prices[0],
            max(prices),
            min(prices),
            prices[-1],
            sum(t.volume for _, _, t in items),
            len(items),
        )
    return out


BASES = [
    us(x) for x in ("2025-03-09T05:30", "2025-11-02T04:30", "2025-02-28T21:00", "2025-03-02T22:00")
]
STEP = st.one_of(
    st.just(0),
    st.integers(0, 3_000_000),
    st.integers(0, 600_000_000),
    st.integers(0, 7_200_000_000),
)
EVENT = st.tuples(
    st.sampled_from([MNQ, MES, "CON.F.US.M2K.Z25"]),
    STEP,
    st.one_of(st.just(0), st.integers(0, 60_000_000)),  # how far back (late) the trade is
    st.integers(1, 8).map(float),  # few prices: many ties
    st.integers(1, 5),
    st.sampled_from(["same", "message", "batch", "tick"]),
)


@settings(max_examples=150, deadline=None)
@given(
    base=st.sampled_from(BASES),
    tfs=st.lists(
        st.sampled_from(["1sec", "1min", "5min", "1hr", "3hr", "4hr", "1day", "1week", "1month"]),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    events=st.lists(EVENT, min_size=1, max_size=60),
    grace=st.sampled_from([0.0, 5.0]),
    tick_lag=st.sampled_from([-30.0, 0.0, 90.0]),
    stop=st.booleans(),
)
def test_final_bars_equal_a_reference_aggregation(
    base: int,
    tfs: list[str],
    events: list[tuple[str, int, int, float, int, str]],
    grace: float,
    tick_lag: float,
    stop: bool,
) -> None:
    clock, now = base, 0.0
    newest: dict[str, int] = {}
    accepted: list[Trade] = []
    batches: list[list[Any]] = [[]]
    message: list[Trade] = []
    for contract, step, back, price, volume, cut in events:
        clock += step
        # validation's staleness rule: at most 60 s older than the contract's newest
        ts = max(clock - back, newest.get(contract, clock) - 60_000_000)
        newest[contract] = max(newest.get(contract, ts), ts)
        t = Trade(contract, ts, price, volume, 1, clock / 1e6)
        accepted.append(t)
        message.append(t)
        if cut != "same":
            batches[-1].append(TradesAccepted(message))
            message = []
        if cut in ("batch", "tick"):
            batches.append([])
        if cut == "tick":
            now = max(now, clock / 1e6 + tick_lag)
            batches[-1].append(Tick(now))
    batches[-1].append(TradesAccepted(message))
    if stop:
        batches[-1].append(Stop())
    actor, ctx = trio.run(lambda: run_actor(batches, tfs, grace=grace))
    assert final_bars(ctx.out) == reference_bars(accepted, tfs)
    assert {
        (m.bar.contract, m.bar.timeframe, m.bar.start) for m in ctx.out if type(m) is BarClosed
    } == set(final_bars(ctx.out))
    assert actor.counters["trades_aggregated"] == len(accepted)
    assert actor.counters["late_beyond_ring"] == 0


def test_reference_start_agrees_with_the_literal_rules() -> None:
    """The reference itself, pinned on the values of test_timeframes."""
    assert reference_start("4hr", us("2025-03-09T09:00")) == us("2025-03-09T07:00")
    assert reference_start("4hr", us("2025-11-02T08:00")) == us("2025-11-02T06:00")
    assert reference_start("3hr", us("2025-03-09T09:00")) == us("2025-03-09T08:00")
    assert reference_start("1week", us("2025-03-12T15:00")) == us("2025-03-09T22:00")
    assert reference_start("1month", us("2025-03-15T12:00")) == us("2025-02-28T23:00")
    assert date(2025, 3, 9).weekday() == 6


@pytest.mark.trio
async def test_flush_is_answered_after_earlier_bars_were_told() -> None:
    box: Mailbox[object] = Mailbox("bars", MailboxSpec(16))
    ctx = BarsContext()
    box.send_nowait(trades(trade("2025-01-06T15:00:10+00:00", 10.0)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(BarsActor(["1min"]).run, box, ctx)
        counters = await MailboxRef(box).ask(Flush(), timeout=1)
        assert counters["trades_aggregated"] == 1
        assert [type(m).__name__ for m in ctx.out] == ["BarUpdated"]
        box.close()
    box.dispose()


def test_track_timeframes_builds_more_from_now_on() -> None:
    actor = BarsActor(["1min"])
    actor.on_trades([trade("2025-01-06T15:00:10+00:00", 10.0)])
    actor.flush_runs()
    actor.on_track(["5min", "1min", "bogus"])  # a bad name: counted, nothing added
    assert [tf.name for tf in actor.timeframes] == ["1min"]
    actor.on_track(["5min", "1min"])
    actor.on_trades([trade("2025-01-06T15:00:20+00:00", 11.0)])
    actor.flush_runs()
    one = actor.on_get_bars(GetBars(MNQ, "1min", 5))
    five = actor.on_get_bars(GetBars(MNQ, "5min", 5))
    assert one["trades"].to_list() == [2] and five["trades"].to_list() == [1]
    assert actor.counters["unknown_messages"] == 1
