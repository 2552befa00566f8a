"""History and live as one truth, through the whole node against the sim (virtual time).

The sim's History answers like the gateway: newest first, 1day bars at 00:00 UTC,
its own alignment for longer units, errorCode answers, and 429 beyond 30
retrieveBars per 30 s. The node must still build every forming bar on pxnode's
own session rules, from history plus the live trades, each counted once.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import anyio
import msgspec
import pytest

from protocols.errors import ConfigError, NotReady, UnknownSeries
from protocols.messages import BarClosed, BarUpdated, TradesAccepted
from protocols.rest import RateLimit, RestLimits
from protocols.secrets import Secret
from protocols.timeframes import BarClock, parse_timeframe
from pxnode.sim import CONTRACTS, SimConfig
from pxnode.sim.faults import Fault
from pxnode.testing import MNQ, Tap, node_config, sim_node
from supervisors.config import BarsConfig

ES = "CON.F.US.EP.Z25"
FRAMES = ["1min", "5min", "15min", "1hr", "4hr", "1day"]
PATH = "/api/History/retrieveBars"


def history_config(contracts: list[str], frames: list[str], bars: int = 2) -> Any:
    base = node_config()
    return msgspec.structs.replace(
        base, contracts=contracts, history_bars=bars, bars=BarsConfig(timeframes=frames)
    )


def truth(
    h: Any, contract: str, lo_us: int, hi_us: int
) -> list[tuple[int, float, float, float, float, int]]:
    """What was traded in ``[lo, hi)`` (whole seconds): synthetic minutes, then sim seconds."""
    start = int(h.sim.sim.start)
    lo, hi = lo_us // 1_000_000, hi_us // 1_000_000
    rows = list(h.sim.rest.synthetic.rows(contract, lo, min(hi, start)))
    seconds = h.sim.sim.seconds(contract)
    for i in seconds.between(max(lo, start), hi):
        rows.append(
            (seconds.secs[i], seconds.o[i], seconds.h[i], seconds.l[i], seconds.c[i], seconds.v[i])
        )
    return rows


@pytest.mark.trio
async def test_every_forming_bar_is_history_plus_live_trades_each_counted_once(
    autojump_clock: Any,
) -> None:
    frames = ["1min", "5min", "1hr", "4hr", "1day"]
    async with sim_node(config=history_config([MNQ, ES], frames)) as h:
        node = h.node
        trades = Tap(node, "topic.trades")
        with anyio.fail_after(120):
            await node.ready()
        await anyio.sleep(75)  # live trades on top of the back-fill
        h.sim.apply(Fault("stall", 0.0, 10.0))  # no more trades: the node catches up
        await anyio.sleep(2)
        # the cut is the seconds' endTime (no seconds asked: it is on a whole minute)
        ends = [json.loads(c.body)["endTime"] for c in h.net.calls(PATH)]
        cut = max(round(datetime.fromisoformat(end).timestamp() * 1_000_000) for end in ends)
        live = [t for m in trades.of(TradesAccepted) for t in m.trades]
        assert live and min(t.ts for t in live) < cut  # live trades before the cut: provisional
        for contract in (MNQ, ES):
            for name in frames:
                frame = await node.bars(contract, name, 1)
                bar = frame.row(0, named=True)
                start = round(bar["start"].timestamp() * 1_000_000)
                end = BarClock(parse_timeframe(name)).bounds(start)[1]
                rows = [r for r in truth(h, contract, start, cut) if start <= r[0] * 1_000_000]
                after = [
                    t for t in live if t.contract == contract and max(cut, start) <= t.ts < end
                ]
                volume = sum(r[5] for r in rows) + sum(t.volume for t in after)
                high = max([r[2] for r in rows] + [t.price for t in after])
                low = min([r[3] for r in rows] + [t.price for t in after])
                assert (bar["volume"], bar["high"], bar["low"]) == (volume, high, low), (
                    contract,
                    name,
                )
                assert bar["open"] == (rows[0][1] if rows else after[0].price)
                assert bar["close"] == (after[-1].price if after else rows[-1][4])
        trades.dispose()


@pytest.mark.trio
async def test_twenty_contracts_by_six_timeframes_all_get_their_history_under_the_rate_limit(
    autojump_clock: Any,
) -> None:
    contracts = list(CONTRACTS)[:20]
    sim = SimConfig(seed=3, rate=100.0, contracts=tuple(contracts), tick=0.1)
    async with sim_node(config=history_config(contracts, FRAMES, bars=1), sim=sim) as h:
        bars = Tap(h.node, "topic.bars")
        with anyio.fail_after(600):
            await h.node.ready(timeout=600)
        ready_at = anyio.current_time()
        calls = h.net.calls(PATH)
        # 1min and 1hr per contract, shared by all six frames (1sec too unless the cut is on
        # a whole minute): one request each, none twice
        asked = [(json.loads(c.body)["contractId"], json.loads(c.body)["unit"]) for c in calls]
        assert len(asked) == len(set(asked)) and {u for _, u in asked} <= {1, 2, 3}
        assert {(c, u) for c in contracts for u in (2, 3)} <= set(asked)
        assert {c.status for c in calls} == {200}  # the budget kept under the limit: no 429
        assert h.sim.rest.throttled == 0
        assert ready_at > 30  # 60 requests at 30 per 30 s: the budget queued the rest
        history = {
            (m.bar.contract, m.bar.timeframe)
            for m in bars.of(BarClosed)
            if m.bar.source == "history"
        }
        assert history >= {(c, f) for c in contracts for f in ("1min", "5min", "15min", "1hr")}
        for contract in contracts:
            for name in FRAMES:
                frame = await h.node.bars(contract, name, 5)
                assert frame.height >= 1, (contract, name)
        bars.dispose()


@pytest.mark.trio
async def test_ready_names_what_is_missing_and_streams_filter(autojump_clock: Any) -> None:
    async with sim_node(
        config=history_config([MNQ, ES], ["1min", "1hr"]), refused=("market",)
    ) as h:
        node = h.node
        with pytest.raises(NotReady) as info:
            await node.ready(timeout=20)
        text = str(info.value)
        assert "market hub not connected" in text and f"{MNQ} 1min" in text
        with pytest.raises(UnknownSeries, match=r"CON\.F\.US\.NOPE"):
            await node.bars("CON.F.US.NOPE", "1min")
        with pytest.raises(UnknownSeries, match="'5min' is not built"):
            await node.bars(MNQ, "5min")
        with pytest.raises(UnknownSeries):
            node.stream_bars(contracts=["CON.F.US.NOPE"])
        with pytest.raises(NotReady, match="market hub not connected"):
            await node.ready(timeout=0)  # "is it ready now?" is asked once, named
        h.net.refused.clear()
        stream = node.stream_bars(contracts=[ES], timeframes=["1hr"])
        trades = node.stream_trades(contracts=[MNQ])
        await node.ready(timeout=120)
        await node.ready(timeout=0)  # ready now: it said NotReady naming nothing (a hunt)
        await anyio.sleep(5)
        seen = stream.drain(10_000)
        assert seen and {(m.bar.contract, m.bar.timeframe) for m in seen} == {(ES, "1hr")}
        assert all(isinstance(m, BarUpdated | BarClosed) for m in seen)
        batches = trades.drain(10_000)
        assert batches and {t.contract for b in batches for t in b.trades} == {MNQ}
        stream.dispose()
        trades.dispose()


@pytest.mark.trio
async def test_gateway_logout_logs_in_again_and_reconnects_both_hubs_at_once(
    autojump_clock: Any,
) -> None:
    async with sim_node() as h:
        node = h.node
        await node.ready(timeout=60)
        await anyio.sleep(30)
        logins = len(h.net.calls("/api/Auth/loginKey"))
        dials = {hub: len(h.net.hub_dials(hub)) for hub in ("market", "user")}
        at = anyio.current_time()
        h.sim.apply(Fault("logout", 0.0))
        trades = Tap(node, "topic.trades")
        with anyio.fail_after(5):  # far sooner than the stale-feed timer
            while not trades.of(TradesAccepted):  # noqa: ASYNC110 - polls the node's output
                await anyio.sleep(0.1)
        assert len(h.net.calls("/api/Auth/loginKey")) == logins + 1
        for hub in ("market", "user"):
            assert len(h.net.hub_dials(hub)) == dials[hub] + 1
            assert h.net.hub_dials(hub)[-1] - at < 2
        trades.dispose()


@pytest.mark.trio
async def test_a_gateway_stricter_than_the_budget_is_waited_out_series_by_series(
    autojump_clock: Any,
) -> None:
    """The sim allows 4 retrieveBars per 30 s: 429s without Retry-After, nothing lost."""
    contracts = list(CONTRACTS)[:5]
    limits = RestLimits(history=RateLimit(4, 30.0))
    sim = SimConfig(seed=3, rate=50.0, contracts=tuple(contracts), tick=0.1, rest_limits=limits)
    async with sim_node(config=history_config(contracts, ["1min", "1hr"], bars=1), sim=sim) as h:
        await h.node.ready(timeout=900)
        calls = h.net.calls(PATH)
        assert h.sim.rest.throttled > 0 and {c.status for c in calls} == {200, 429}
        assert sum(c.status == 200 for c in calls) in (5 * 2, 5 * 3)


@pytest.mark.trio
async def test_symbols_resolve_when_embedding_and_an_unknown_one_is_one_clear_error(
    autojump_clock: Any,
) -> None:
    config = history_config(["MNQ", ES], ["1min"], bars=0)
    async with sim_node(config=config) as h:
        assert h.node.config.contracts == [MNQ, ES]
        await h.node.ready(timeout=60)
        frame = await h.node.bars(MNQ, "1min")
        assert frame.height >= 1
    with pytest.raises(ConfigError, match="unknown contract 'NOPE'"):
        async with sim_node(config=history_config(["NOPE"], ["1min"], bars=0)):
            pass


@pytest.mark.trio
async def test_a_refused_login_while_resolving_symbols_is_one_line(autojump_clock: Any) -> None:
    config = history_config(["MNQ"], ["1min"], bars=0)
    gateway = msgspec.structs.replace(config.gateway, api_key=Secret("wrong-key"))
    with pytest.raises(ConfigError) as info:
        async with sim_node(config=msgspec.structs.replace(config, gateway=gateway)):
            pass
    assert str(info.value) == (
        "cannot look up contract symbols: Auth/loginKey refused: errorCode 3 (InvalidCredentials)"
    )


@pytest.mark.trio
async def test_after_a_gap_the_bars_are_history_plus_live_again(autojump_clock: Any) -> None:
    frames = ["1min", "5min", "1hr", "1day"]
    async with sim_node(config=history_config([MNQ], frames)) as h:
        node = h.node
        trades = Tap(node, "topic.trades")
        await node.ready(timeout=120)
        await anyio.sleep(30)
        h.net.refused.add("market.sim")
        h.sim.apply(Fault("drop", 0.0))
        await anyio.sleep(1)
        with pytest.raises(NotReady, match="market hub not connected"):
            await node.ready(timeout=20)  # 20 s of trades the node never sees
        h.net.refused.clear()
        await node.ready(timeout=120)  # the gap is back-filled
        await anyio.sleep(20)
        h.sim.apply(Fault("stall", 0.0, 10.0))
        await anyio.sleep(2)
        ends = [json.loads(c.body)["endTime"] for c in h.net.calls(PATH)]
        cut = max(round(datetime.fromisoformat(end).timestamp() * 1_000_000) for end in ends)
        live = [t for m in trades.of(TradesAccepted) for t in m.trades]
        for name in frames:
            bar = (await node.bars(MNQ, name, 1)).row(0, named=True)
            start = round(bar["start"].timestamp() * 1_000_000)
            end = BarClock(parse_timeframe(name)).bounds(start)[1]
            rows = [r for r in truth(h, MNQ, start, cut) if start <= r[0] * 1_000_000]
            after = [t for t in live if t.contract == MNQ and max(cut, start) <= t.ts < end]
            assert bar["volume"] == sum(r[5] for r in rows) + sum(t.volume for t in after), name
        trades.dispose()


@pytest.mark.trio
async def test_a_gap_whose_back_fill_keeps_failing_is_filled_once_history_answers(
    autojump_clock: Any,
) -> None:
    """Seen in the chaos soak: 500s right after a reconnect lost a gap's trades for good."""
    async with sim_node(config=history_config([MNQ], ["1min"])) as h:
        node = h.node
        await node.ready(timeout=120)
        await anyio.sleep(30)
        h.net.refused.add("market.sim")
        h.sim.apply(Fault("drop", 0.0))
        await anyio.sleep(20)  # trades the node never sees
        h.sim.rest.pending_500 = 1_000_000  # every REST call fails until further notice
        h.net.refused.clear()
        why = rf"{MNQ} 1min \(again after: 1\w+ history: gave up after 4 attempts: .* HTTP 500\)"
        with pytest.raises(NotReady, match=why):
            await node.ready(timeout=120)
        h.sim.rest.pending_500 = 0
        await node.ready(timeout=600)  # the next refill: at most 5 min later
        await anyio.sleep(90)  # the minutes of the gap and of the refill have closed
        clock = BarClock(parse_timeframe("1min"))
        frame = await node.bars(MNQ, "1min", 20)
        closed = 0
        for bar in frame.iter_rows(named=True):
            start = round(bar["start"].timestamp() * 1_000_000)
            end = clock.bounds(start)[1]
            if end <= (h.wall() - 5) * 1_000_000:
                closed += 1
                expected = sum(r[5] for r in truth(h, MNQ, start, end))
                assert bar["volume"] == expected, bar["start"]
        assert closed >= 10
