"""A node opened on a tape: the embedding API fed from yesterday's recording.

At full speed it must give exactly the bars ``pxnode replay`` writes; at a
recorded pace (virtual time here) bars close when they closed live, a quiet
stretch of the tape included.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors.tape import TapeCounts, TapeLine, TapePlayer, read_tape
from protocols.errors import ConfigError, Escalation, TapeError, UnknownSeries
from protocols.messages import Bar, BarClosed, BarUpdated
from pxnode import BarsConfig, NodeConfig, TapeConfig, open_node
from pxnode.replay import replay
from supervisors.mailbox import OverflowPolicy
from tests.pxnode.test_replay import TAPE, generated_tape, item, line, unix

FRAMES = ["1min", "5min", "1hr", "4hr"]
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def tape_config(path: Path, frames: list[str], speed: float | None = None) -> NodeConfig:
    return NodeConfig(tape=TapeConfig(str(path), speed), bars=BarsConfig(timeframes=frames))


def final(msgs: list[BarUpdated | BarClosed]) -> list[Bar]:
    """Every bar in its last told state, sorted as replay sorts them."""
    bars = {(m.bar.contract, m.bar.timeframe, m.bar.start): m.bar for m in msgs}
    return [bars[key] for key in sorted(bars)]


@pytest.mark.anyio
@pytest.mark.parametrize("tape", ["hand-written", "generated"])
async def test_at_full_speed_a_node_streams_exactly_the_bars_replay_writes(
    tmp_path: Path, tape: str
) -> None:
    path = tmp_path / "t.tape"
    if tape == "generated":
        generated_tape(path, seed=5, frames=800)  # late trades, DST day, 3 contracts
    else:
        path.write_text("\n".join(TAPE) + "\n")  # every reject reason, a late amend
    expected = await replay(path, FRAMES)
    with anyio.fail_after(30):
        async with open_node(tape_config(path, FRAMES)) as node:
            stream = node.stream_bars(capacity=100_000, policy=OverflowPolicy.BLOCK)
            played = await node.play()
            told = stream.drain(100_000)
            assert await node.play() == played  # played once; asked again, the same answer
            stream.dispose()
    assert final(told) == expected.bars
    stats = expected.stats
    assert (played.lines, played.malformed) == (stats.lines, stats.malformed)
    assert played.counters["trades_accepted"] == stats.trades_accepted
    assert all(isinstance(m, BarUpdated | BarClosed) for m in told)


def quiet_tape(path: Path) -> None:
    """Two trades at 14:30, nothing until 14:45, one more at 15:00 (receive time = trade time)."""
    stamps = ["2025-01-21T14:30:10Z", "2025-01-21T14:30:50Z", "2025-01-21T14:45:00Z"]
    stamps.append("2025-01-21T15:00:00Z")
    lines = [line(s, "GatewayTrade", "CON.F.US.A", [item(100.0, 1, s)]) for s in stamps]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.trio
@pytest.mark.parametrize("speed", [1.0, 60.0])
async def test_at_a_recorded_pace_bars_close_when_they_closed_live(
    autojump_clock: Any, tmp_path: Path, speed: float
) -> None:
    path = tmp_path / "quiet.tape"
    quiet_tape(path)
    t0 = unix("2025-01-21T14:30:10Z")
    closed: list[tuple[float, float]] = []  # (virtual seconds since play, tape end of the bar)
    async with open_node(tape_config(path, ["1min"], speed)) as node:
        stream = node.stream_bars(capacity=1000)
        start = anyio.current_time()

        async def watch() -> None:
            async for msg in stream:
                if isinstance(msg, BarClosed):
                    closed.append((anyio.current_time() - start, msg.bar.start / 1e6 + 60))

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await node.play()
            took = anyio.current_time() - start
            tg.cancel_scope.cancel()
        stream.dispose()
    assert took == pytest.approx((unix("2025-01-21T15:00:00Z") - t0) / speed, abs=0.01)
    bars = [(at, end) for at, end in closed if end < unix("2025-01-21T15:00:00Z") + 60]
    # 14:30 closes at 14:31:00 of tape time, the quiet minute after it on time too
    assert [end for _, end in bars] == [unix("2025-01-21T14:31:00Z"), unix("2025-01-21T14:46:00Z")]
    for at, end in bars:
        assert at == pytest.approx((end - t0) / speed, abs=1.0 / speed + 0.01)


@pytest.mark.trio
async def test_a_quiet_day_at_a_high_speed_is_a_few_ticks_not_one_per_tape_second(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """Ticks come at most once per millisecond of wall time: at 1e9x one covers ~1e6 tape
    seconds (a tick per tape second made a far-future line ~1e11 mailbox messages)."""
    path = tmp_path / "gap.tape"
    stamps = ["2025-01-21T14:30:10Z", "2025-01-22T14:30:10Z"]
    path.write_text(
        "\n".join(line(s, "GatewayTrade", "CON.F.US.A", [item(100.0, 1, s)]) for s in stamps) + "\n"
    )
    async with open_node(tape_config(path, ["1min"], speed=1e9)) as node:
        stream = node.stream_bars(capacity=1000)
        played = await node.play()
        closed = [m.bar.start for m in stream.drain(1000) if isinstance(m, BarClosed)]
        told = {s.name: s.told for s in node.mailbox_statistics()}
        stream.dispose()
    assert played.counters["trades_accepted"] == 2
    assert closed == [unix("2025-01-21T14:30:00Z") * 1e6, unix("2025-01-22T14:30:00Z") * 1e6]
    assert told["bars"] < 20


@pytest.mark.trio
async def test_leaving_the_block_mid_tape_stops_the_player(
    autojump_clock: Any, tmp_path: Path
) -> None:
    path = tmp_path / "quiet.tape"
    quiet_tape(path)
    async with open_node(tape_config(path, ["1min"], speed=1.0)) as node:
        with anyio.move_on_after(60):
            await node.play()
        stopping = anyio.current_time()
    assert anyio.current_time() - stopping < 1.0


@pytest.mark.anyio
async def test_tape_errors_are_clear_and_early(tmp_path: Path) -> None:
    with pytest.raises(TapeError, match=r"cannot open tape .*missing\.tape"):
        async with open_node(tape_config(tmp_path / "missing.tape", ["1min"])):
            pytest.fail("the node started without its tape")
    async with open_node(NodeConfig()) as node:
        with pytest.raises(ConfigError, match="needs a node opened on a tape"):
            await node.play()


@pytest.mark.anyio
async def test_a_failing_player_stops_the_node_instead_of_leaving_play_waiting(
    tmp_path: Path,
) -> None:
    path = tmp_path / "quiet.tape"
    quiet_tape(path)

    def records(counts: TapeCounts) -> Iterator[list[TapeLine]]:
        yield from read_tape(path, counts)
        raise RuntimeError("the disk went away")

    with anyio.fail_after(10), pytest.raises(Escalation) as info:
        async with open_node(tape_config(path, ["1min"]), {"tape": TapePlayer(records)}) as node:
            await node.play()
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    "settings",
    [
        {"path": ""},
        {"path": "t.tape", "speed": 0.0},
        {"path": "t.tape", "speed": -1.0},
        {"path": "t.tape", "speed": float("nan")},
    ],
)
def test_bad_tape_config_is_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TapeConfig(**settings)


def test_one_source_per_node() -> None:
    from pxnode import GatewayConfig

    with pytest.raises(ConfigError, match="one source"):
        NodeConfig(tape=TapeConfig("t.tape"), gateway=GatewayConfig())


def test_a_tape_config_loads_from_toml(tmp_path: Path) -> None:
    from pxnode import load_config

    path = tmp_path / "node.toml"
    path.write_text('[tape]\npath = "yesterday.tape"\nspeed = 2.0\n')
    assert load_config(path, environ={}).tape == TapeConfig("yesterday.tape", 2.0)


@pytest.mark.anyio
async def test_the_readme_backtest_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    section = README.split("### Test a strategy on yesterday's tape", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    generated_tape(tmp_path / "yesterday.tape", seed=3, frames=300)
    monkeypatch.chdir(tmp_path)
    seen: list[Any] = []

    async def my_strategy(bars: Any) -> None:
        async for msg in bars:
            seen.append(msg)

    scope: dict[str, Any] = {"my_strategy": my_strategy}
    exec(compile(code, "README.md", "exec"), scope)  # the README's own example
    with anyio.fail_after(30):
        await scope["backtest"]()
    lines, accepted = map(int, capsys.readouterr().out.split())
    assert lines == 300 and accepted > 300
    assert any(isinstance(m, BarClosed) for m in seen)


@pytest.mark.anyio
async def test_the_stats_after_play_count_the_whole_tape(tmp_path: Path) -> None:
    """A tape node has no clock: validation and bars reported only every so many batches,
    so after ``play()`` the stats held a mid-tape count, or none (found by a hunt)."""
    path = tmp_path / "t.tape"
    generated_tape(path, seed=5, frames=800)
    config = NodeConfig(tape=TapeConfig(str(path)), bars=BarsConfig(timeframes=["1min"]))
    async with open_node(config) as node:
        played = await node.play()
        stats = await node.stats()
    accepted = played.counters["trades_accepted"]
    assert accepted > 0
    assert stats.counters["validation.trades_accepted"] == accepted
    assert stats.counters["bars.trades_aggregated"] == accepted
    # The tape's receive times are the recording's: wall time minus them is the tape's age
    # (days), not a latency, so a tape node samples none.
    assert stats.latencies.get("bars.trade_to_bar") is None


@pytest.mark.anyio
async def test_a_strategy_leaving_its_lossless_stream_early_costs_the_node_nothing(
    tmp_path: Path,
) -> None:
    """A strategy that has seen enough (``break``) leaves its BLOCK stream while bars waits
    for room in it: bars failed with MailboxClosed and came back with an empty book, so
    ``node.bars`` had none of the tape's bars (found by a hunt)."""
    path = tmp_path / "t.tape"
    generated_tape(path, seed=5, frames=800)
    config = NodeConfig(tape=TapeConfig(str(path)), bars=BarsConfig(timeframes=["1min"]))
    with anyio.fail_after(30):
        async with open_node(config) as node:
            with node.stream_events(capacity=10_000) as events:

                async def strategy() -> None:
                    with node.stream_bars(capacity=1, policy=OverflowPolicy.BLOCK) as bars:
                        async for _ in bars:
                            await anyio.sleep(0.01)  # the publisher fills it and waits
                            break

                async with anyio.create_task_group() as tg:
                    tg.start_soon(strategy)
                    played = await node.play()
                failed = [m for m in events.drain(10_000) if getattr(m, "error", None)]
            frame = await node.bars("CON.F.US.A", "1min", 10_000)
    assert failed == []
    assert played.counters["trades_accepted"] == 2877 and frame.height == 81


@pytest.mark.trio
async def test_a_slow_strategy_on_a_lossless_stream_holds_the_tape_back_without_failing(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """The README's backtest with a strategy that takes a second per bar: the end-of-tape
    barriers gave up after 120 s and the node stopped (found by a hunt)."""
    path = tmp_path / "t.tape"
    generated_tape(path, seed=5, frames=3000)
    config = NodeConfig(tape=TapeConfig(str(path)), bars=BarsConfig(timeframes=["1min", "5min"]))
    read = 0
    async with open_node(config) as node:
        with node.stream_bars(policy=OverflowPolicy.BLOCK) as bars:

            async def strategy() -> None:
                nonlocal read
                async for _ in bars:
                    read += 1
                    await anyio.sleep(1.0)  # the strategy's own work on each bar

            async with anyio.create_task_group() as tg:
                tg.start_soon(strategy)
                played = await node.play()
                bars.close()
    assert played.counters["trades_accepted"] > 0
    assert read > 2000  # the tape's bar updates (some merge in a batch), a second each


@pytest.mark.anyio
async def test_a_tape_node_adds_timeframes_and_refuses_contracts_before_changing_anything(
    tmp_path: Path,
) -> None:
    """A strategy written for a live node subscribes: the tape node failed with KeyError
    'connection_market' after adding the timeframe (found by a hunt)."""
    path = tmp_path / "t.tape"
    generated_tape(path, seed=5, frames=800)
    config = NodeConfig(tape=TapeConfig(str(path)), bars=BarsConfig(timeframes=["1min"]))
    async with open_node(config) as node:
        with pytest.raises(ConfigError, match="no gateway to subscribe contracts on"):
            await node.subscribe(["CON.F.US.A"], ["15min"])
        await node.subscribe([], ["5min"])
        await node.play()
        five = await node.bars("CON.F.US.A", "5min", 1000)
        with pytest.raises(UnknownSeries, match="'15min' is not built"):
            await node.bars("CON.F.US.A", "15min", 1000)
    assert five.height > 0
