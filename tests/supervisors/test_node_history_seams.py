"""History and live stay one truth across the seams of a running node: a gap noticed
only a timeout after the feed went silent, a gateway clock ahead of the node's, and
timeframes added one after another (each a new cut). Every bar is judged against the
sim's own record of what it traded, as the chaos soak judges (found by hunts).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import msgspec
import pytest

from actors.connection import HubTimings
from actors.health import HealthConfig
from actors.validation.config import ValidationConfig
from protocols.messages import BackfillState, BarClosed, BarUpdated, GetBackfill
from protocols.timeframes import BarClock, parse_timeframe
from pxnode.sim import Fault, SimConfig
from pxnode.testing import MNQ, SimNode, Tap, node_config, sim_node
from supervisors.config import BarsConfig
from supervisors.registry import WallClock
from tests.sim_record import Quiet, truth

FRAMES = ["1min", "5min", "15min", "1hr", "4hr", "1day"]


@contextmanager
def pinned_time(monkeypatch: pytest.MonkeyPatch, epoch: float) -> Iterator[None]:
    real = time.monotonic()
    monkeypatch.setattr(time, "time", lambda: epoch + time.monotonic() - real)
    yield


def config(
    frames: list[str] = FRAMES, contracts: list[str] | None = None, bars: int = 3, **kw: Any
) -> Any:
    base = node_config(**kw)
    return msgspec.structs.replace(
        base,
        contracts=contracts or [MNQ],
        history_bars=bars,
        bars=BarsConfig(timeframes=frames, ring_size=1000),
    )


def sim_config(rate: float = 20.0, contracts: tuple[str, ...] = (MNQ,), **kw: Any) -> SimConfig:
    return SimConfig(
        seed=kw.pop("seed", 7),
        rate=rate,
        contracts=contracts,
        tick=kw.pop("tick", 0.1),
        history_hours=kw.pop("history_hours", 48.0),
        **kw,
    )


async def mismatches(
    h: SimNode,
    quiet: Quiet,
    frames: list[str] = FRAMES,
    contracts: tuple[str, ...] = (MNQ,),
    n: int = 1000,
    since_us: int | None = None,
) -> list[tuple[Any, ...]]:
    """Every bar of the node (from ``since_us`` on) that differs from the sim's record."""
    out = []
    for contract in contracts:
        for name in frames:
            frame = await h.node.bars(contract, name, n)
            for bar in frame.iter_rows(named=True):
                start = round(bar["start"].timestamp() * 1_000_000)
                if since_us is not None and start < since_us:
                    continue
                end = BarClock(parse_timeframe(name)).bounds(start)[1]
                ours = tuple(bar[k] for k in ("open", "high", "low", "close", "volume"))
                expected = truth(h, contract, start, end, quiet)
                if ours != expected:
                    out.append((contract, name, str(bar["start"]), ours, expected))
    return out


async def missing(
    h: SimNode,
    quiet: Quiet,
    frames: list[str],
    since_us: int,
    contracts: tuple[str, ...] = (MNQ,),
    n: int = 1000,
) -> list[tuple[Any, ...]]:
    """Bars the sim traded in (from ``since_us`` to the quiet moment) that the node lacks."""
    out = []
    for contract in contracts:
        trades = [
            t
            for t in h.sim.sim.recent_trades(contract)
            if t.ts >= since_us and (t.ts < quiet.since * 1_000_000 or t in quiet.sent[contract])
        ]
        for name in frames:
            clock = BarClock(parse_timeframe(name))
            frame = await h.node.bars(contract, name, n)
            have = {round(b["start"].timestamp() * 1_000_000) for b in frame.iter_rows(named=True)}
            want = {clock.bounds(t.ts)[0] for t in trades}
            for start in sorted(want - have):
                if start >= since_us:
                    out.append((contract, name, start))
    return out


EPOCH = 1_796_652_000.0 + 17.3  # Monday 2026-12-07 14:00:17.3 UTC


class _Skewed:
    """The gateway's clock: the node's wall clock plus ``by`` seconds."""

    def __init__(self, by: float) -> None:
        self.inner, self.by = WallClock(), by

    def __call__(self) -> float:
        return self.inner() + self.by


def gateway_clock(monkeypatch: pytest.MonkeyPatch, by: float) -> None:
    import pxnode.testing._simnode as simnode

    monkeypatch.setattr(simnode, "WallClock", lambda: _Skewed(by))  # the sim's clock only


async def drop_and_refill(h: Any, gap: float = 25.0) -> None:
    await h.node.ready(timeout=300)
    await anyio.sleep(40)
    h.net.refused.add("market.sim")
    h.sim.apply(Fault("drop", 0.0))
    await anyio.sleep(gap)
    h.net.refused.clear()
    await h.node.ready(timeout=300)
    await anyio.sleep(30)


@pytest.mark.trio
async def test_history_waits_for_a_gateway_clock_behind_the_nodes(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's clock 4 s ahead of the gateway's (its trades pass validation: only 4 s
    old). Asked at cut + settle by the node's clock, the gateway had not traded up to the
    cut: its answer lacked the cut's last seconds, and the live trades of those seconds,
    arriving later, were dropped as history's."""
    gateway_clock(monkeypatch, -4.0)
    with pinned_time(monkeypatch, EPOCH):
        async with sim_node(config=config(), sim=sim_config()) as h:
            await drop_and_refill(h)
            quiet = Quiet(h, 25.0, (MNQ,))
            await anyio.sleep(5)
            bad = await mismatches(h, quiet)
    assert not bad, bad[:3]


@pytest.mark.parametrize("fault", ["drop", "stall"])
@pytest.mark.trio
async def test_a_gap_reaches_back_by_the_gateways_lag_too(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """The gateway's clock 4 s behind the node's: the gap began at the hub's last event by
    the node's clock, but the trades it missed carry the gateway's times, 4 s earlier; the
    1sec bars of those seconds were never asked for (found by a second hunt)."""
    frames = ["1sec", "5sec", "1min"]
    gateway_clock(monkeypatch, -4.0)
    with pinned_time(monkeypatch, EPOCH):
        async with sim_node(config=config(frames), sim=sim_config(rate=10.0)) as h:
            await h.node.ready(timeout=300)
            await anyio.sleep(40)
            since = int((h.wall() - 30) * 1e6)
            if fault == "drop":
                h.net.refused.add("market.sim")
                h.sim.apply(Fault("drop", 0.0))
                await anyio.sleep(5)
                h.net.refused.clear()
            else:
                h.sim.apply(Fault("stall", 0.0, 40.0))  # noticed server_timeout (30 s) later
                await anyio.sleep(45)
            await h.node.ready(timeout=300)
            await anyio.sleep(30)
            quiet = Quiet(h, 25.0, (MNQ,))
            await anyio.sleep(5)
            gone = await missing(h, quiet, frames, since)
            bad = await mismatches(h, quiet, frames, since_us=since)
    assert not gone, f"{len(gone)} bars traded but absent, e.g. {gone[:3]}"
    assert not bad, bad[:3]


@pytest.mark.trio
async def test_the_cut_lies_beyond_every_trade_validation_takes_from_a_clock_ahead(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With validation.max_future 30 s and the gateway's clock 7 s ahead, a cut 6 s ahead
    (it was fixed) was passed by live trades before bars heard of it: not in the
    straddling bar's live part, they were lost when history replaced it, uncounted."""
    gateway_clock(monkeypatch, 7.0)
    cfg = msgspec.structs.replace(config(), validation=ValidationConfig(max_future=30.0))
    with pinned_time(monkeypatch, EPOCH):
        async with sim_node(config=cfg, sim=sim_config()) as h:
            await drop_and_refill(h)
            quiet = Quiet(h, 25.0, (MNQ,))
            await anyio.sleep(5)
            bad = await mismatches(h, quiet)
    assert not bad, bad[:3]


@pytest.mark.parametrize(
    "frames,timings,stall",
    [
        (["1sec", "5sec", "15sec", "1min"], HubTimings(), 40.0),  # defaults: server_timeout 30 s
        # the chaos soak's timings (its quiet market is no stale feed): minute frames too
        (["1min"], HubTimings(keepalive_interval=60.0, server_timeout=120.0), 150.0),
    ],
    ids=["second-frames-default-timeout", "1min-server-timeout-120"],
)
@pytest.mark.trio
async def test_a_silent_hub_is_back_filled_from_when_the_feed_went_silent(
    autojump_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    frames: list[str],
    timings: HubTimings,
    stall: float,
) -> None:
    """A silent socket is noticed only server_timeout later. The gap was taken from that
    moment (one bar back), so the first part of the silence was never back-filled in the
    frames shorter than the timeout; Disconnected now says when the feed went silent."""
    with pinned_time(monkeypatch, EPOCH):
        health = HealthConfig(stale_after=900.0) if timings.server_timeout > 30 else None
        cfg = config(frames, hub_timings=timings, health=health)
        async with sim_node(config=cfg, sim=sim_config(rate=10.0)) as h:
            await h.node.ready(timeout=300)
            await anyio.sleep(20)
            silent_from = h.wall()
            h.sim.apply(Fault("stall", 0.0, stall))  # the sim sends nothing, trades on
            await anyio.sleep(stall + 5)
            await h.node.ready(timeout=300)
            await anyio.sleep(20)
            quiet = Quiet(h, 25.0, (MNQ,))
            await anyio.sleep(5)
            since = int((silent_from - 120) * 1e6)
            bad = await mismatches(h, quiet, frames, since_us=since)
            gone = await missing(h, quiet, frames, since)
    assert not gone, f"{len(gone)} bars traded but absent, e.g. {gone[:3]}"
    assert not bad, bad[:3]


NEW_FRAMES = ["2hr", "3hr", "6hr", "8hr", "12hr", "1week", "1month",
              "2min", "3min", "4min", "6min", "10min"]  # fmt: skip


@pytest.mark.trio
async def test_timeframes_added_one_a_second_keep_every_forming_bar_whole(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ``node.subscribe([], [tf])`` makes a new cut. Bars kept the newest 8 as the
    points runs split at: a dozen, a second apart, pushed out the start-up cut while its
    1min bar still formed, and the live trades after it went as history's."""
    with pinned_time(monkeypatch, EPOCH):
        async with sim_node(config=config(["1min", "1hr"], bars=2), sim=sim_config(rate=50.0)) as h:
            await h.node.ready(timeout=300)
            for tf in NEW_FRAMES:
                await h.node.subscribe([], [tf])  # an app adding charts, one a second
                await anyio.sleep(1.0)
            await h.node.ready(timeout=600)
            await anyio.sleep(40)
            quiet = Quiet(h, 25.0, (MNQ,))
            await anyio.sleep(5)
            bad = await mismatches(h, quiet, ["1min", "1hr"], (MNQ,), n=50)
    assert not bad, bad[:3]


CHART_FRAMES = ["2sec", "3sec", "4sec", "6sec", "10sec", "12sec", "20sec", "30sec", "2min",
                "3min", "4min", "6min", "10min", "12min", "20min", "30min"]  # fmt: skip


async def pending(h: SimNode) -> list[str]:
    state = await h.node.ref("history").ask(GetBackfill(), timeout=5.0)
    assert isinstance(state, BackfillState)
    return state.pending


@pytest.mark.trio
async def test_a_gap_is_back_filled_while_timeframes_are_added_every_5_s(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each subscription gave every series still waiting a new cut, and the round for the
    old one was dropped: an app adding a chart every 5 s kept a gap's 1min series from
    ever being back-filled, and node.ready() waiting (found by a hunt)."""
    with pinned_time(monkeypatch, EPOCH):
        async with sim_node(config=config(["1min"]), sim=sim_config()) as h:
            await h.node.ready(timeout=300)
            await anyio.sleep(20)
            h.sim.apply(Fault("drop", 0.0))
            dropped = h.wall()
            while f"{MNQ} 1min" not in await pending(h):  # noqa: ASYNC110 - polls a snapshot
                await anyio.sleep(0.1)
            filled = None
            for tf in CHART_FRAMES:
                await h.node.subscribe([], [tf])
                added = h.wall()
                while h.wall() < added + 5.0:
                    if filled is None and f"{MNQ} 1min" not in await pending(h):
                        filled = h.wall() - dropped
                    await anyio.sleep(0.1)
            await h.node.ready(timeout=300)
            await anyio.sleep(40)
            quiet = Quiet(h, 25.0, (MNQ,))
            await anyio.sleep(5)
            bad = await mismatches(h, quiet, ["1min", *CHART_FRAMES], n=50)
    assert filled is not None and filled < 15.0, filled
    assert not bad, bad[:3]


@pytest.mark.trio
async def test_the_bars_stream_and_the_book_agree_when_an_answer_lacks_live_bars(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's clock 12 s behind: asked max_clock_lag after the cut, its answer
    lacked the cut's last seconds. The 1sec bars live trades had built there left the
    book, told to no subscriber: the stream kept bars node.bars() no longer had, and
    their trades were counted nowhere (found by a hunt)."""
    frames = ["1sec", "5sec", "1min", "1hr"]
    gateway_clock(monkeypatch, -12.0)
    with pinned_time(monkeypatch, EPOCH):
        async with sim_node(config=config(frames), sim=sim_config(rate=10.0)) as h:
            stream = Tap(h.node, "topic.bars")
            await drop_and_refill(h, gap=20.0)
            h.sim.apply(Fault("stall", 0.0, 25.0))  # nothing more on its way
            await anyio.sleep(3)
            told = {}
            for msg in stream.take():
                if isinstance(msg, BarUpdated | BarClosed):
                    bar = msg.bar
                    ohlcvt = (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trades)
                    told[bar.timeframe, bar.start] = ohlcvt
            book, kept_from = {}, {}  # the book keeps the newest ring_size bars of each
            for name in frames:
                frame = await h.node.bars(MNQ, name, 1000)
                book.update({(name, round(r[2].timestamp() * 1e6)): r[3:] for r in frame.rows()})
                kept_from[name] = min(start for tf, start in book if tf == name)
            stream.dispose()
    differ = sorted(
        key
        for key in told.keys() | book.keys()
        if key[1] >= kept_from[key[0]] and told.get(key) != book.get(key)
    )
    assert not differ, [(key, told.get(key), book.get(key)) for key in differ[:3]]
