"""Replay: a tape through the real actors gives literal bars, the same bytes every time."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import polars as pl
import pyarrow.parquet as pq
import pytest

import pxnode.replay
from protocols.errors import ConfigError, TapeError
from protocols.messages import Bar
from protocols.timeframes import BarClock, parse_timeframe
from pxnode import NodeConfig
from pxnode.replay import ReplayResult, ReplayStats, replay, replay_to, write_bars
from tests.subprocess_env import strict_env

A, B = "CON.F.US.MES.H25", "CON.F.US.MNQ.H25"
LIMIT = 10.0  # seconds: a missing barrier fails the test instead of hanging it


def unix(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def us(text: str) -> int:
    return round(unix(text) * 1_000_000)


def line(t: str, target: str, *arguments: Any, hub: str = "market") -> str:
    return json.dumps({"t": unix(t), "hub": hub, "target": target, "arguments": list(arguments)})


def item(price: Any, volume: Any, ts: str, side: int = 0) -> dict[str, Any]:
    return {"symbolId": "F.US.X", "price": price, "timestamp": ts, "type": side, "volume": volume}


TAPE = [
    line("2025-01-21T14:30:10.100Z", "GatewayTrade", A,
         [item(100.0, 1, "2025-01-21T14:30:00+00:00"),
          item(101.0, 2, "2025-01-21T08:30:10-06:00")]),  # Chicago offset: 14:30:10Z
    line("2025-01-21T14:30:30.200Z", "GatewayTrade", B,
         item(50.0, 3, "2025-01-21T14:30:30.000Z")),  # a single object, not a list
    line("2025-01-21T14:31:05.100Z", "GatewayTrade", A,
         [item(102.0, 1, "2025-01-21T14:31:05Z"),
          item("102", 1, "2025-01-21T14:31:05Z"),  # price not a number: rejected alone
          42]),  # not an object: malformed item
    line("2025-01-21T14:31:06.000Z", "GatewayTrade", A,
         [item(160.0, 1, "2025-01-21T14:31:06Z")]),  # +57 %: spike
    "this line is not JSON",
    line("2025-01-21T14:31:07.000Z", "GatewayQuote", A,
         {"lastPrice": 102.0, "bestBid": 101.75, "bestAsk": 102.0,
          "timestamp": "2025-01-21T14:31:07Z"}),
    line("2025-01-21T14:32:01.000Z", "GatewayTrade", A,
         [item(103.0, 1, "2025-01-21T14:32:00.500Z")]),  # the tick at 14:32:01 closes 14:31
    "",
    line("2025-01-21T14:32:02.000Z", "GatewayTrade", A,
         [item(99.0, 5, "2025-01-21T14:31:30Z")]),  # late: amends the closed 14:31 bar
    json.dumps({"t": 1737469922.0, "hub": "foo", "target": "GatewayTrade", "arguments": []}),
    line("2025-01-21T15:00:00.300Z", "GatewayTrade", A,
         [item(104.0, 1, "2025-01-21T15:00:00Z")]),  # 09:00 Chicago: a new 4hr bar
    line("2025-01-21T15:00:01.000Z", "GatewayTrade", A,
         [item(103.5, 1, "2025-01-21T14:58:00Z")]),  # 120 s behind the newest: stale
    line("2025-01-21T15:00:02.000Z", "GatewayTrade", A,
         [item(104.5, 1, "2025-01-21T15:00:10Z")]),  # 8 s after receipt: future
]  # fmt: skip


def bar(contract: str, tf: str, start: str, o: float, h: float, lo: float, c: float,
        v: int, n: int) -> Bar:  # fmt: skip
    return Bar(contract, tf, us(start), o, h, lo, c, v, n)


EXPECTED = [
    bar(A, "1min", "2025-01-21T14:30:00Z", 100.0, 101.0, 100.0, 101.0, 3, 2),
    bar(A, "1min", "2025-01-21T14:31:00Z", 102.0, 102.0, 99.0, 99.0, 6, 2),
    bar(A, "1min", "2025-01-21T14:32:00Z", 103.0, 103.0, 103.0, 103.0, 1, 1),
    bar(A, "1min", "2025-01-21T15:00:00Z", 104.0, 104.0, 104.0, 104.0, 1, 1),
    bar(A, "4hr", "2025-01-21T11:00:00Z", 100.0, 103.0, 99.0, 103.0, 10, 5),  # 05:00 Chicago
    bar(A, "4hr", "2025-01-21T15:00:00Z", 104.0, 104.0, 104.0, 104.0, 1, 1),
    bar(B, "1min", "2025-01-21T14:30:00Z", 50.0, 50.0, 50.0, 50.0, 3, 1),
    bar(B, "4hr", "2025-01-21T11:00:00Z", 50.0, 50.0, 50.0, 50.0, 3, 1),
]
EXPECTED_STATS = ReplayStats(
    lines=12,
    malformed=2,
    trades_accepted=7,
    trades_rejected={
        "price": 1,
        "volume": 0,
        "timestamp": 0,
        "future": 1,
        "too_old": 0,
        "stale": 1,
        "spike": 1,
        "malformed": 1,
    },
    bars=8,
    frames_skipped={"malformed": 0, "unknown_target": 0, "over_contract_cap": 0},
)


@pytest.fixture
def tape(tmp_path: Path) -> Path:
    path = tmp_path / "small.tape"
    path.write_text("\n".join(TAPE) + "\n")
    return path


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def run(path: Path, timeframes: list[str], **kwargs: Any) -> ReplayResult:
    with anyio.fail_after(LIMIT):
        return await replay(path, timeframes, **kwargs)


@pytest.mark.anyio
async def test_small_tape_gives_literal_bars_and_stats(tape: Path) -> None:
    streamed: list[Bar] = []
    result = await run(tape, ["1min", "4hr"], on_bar=streamed.append)
    assert result.bars == EXPECTED
    assert result.stats == EXPECTED_STATS
    assert msgspec.json.encode(result.stats) == (
        b'{"lines":12,"malformed":2,"trades_accepted":7,"trades_rejected":{"price":1,'
        b'"volume":0,"timestamp":0,"future":1,"too_old":0,"stale":1,"spike":1,"malformed":1},'
        b'"bars":8,"frames_skipped":{"malformed":0,"unknown_target":0,"over_contract_cap":0},'
        b'"lines_filtered":0,"trades_filtered":{"before_since":0,"after_until":0,"contract":0}}'
    )
    # Streamed as closes and corrections arrive; the last version of each bar is the final one.
    last = {(b.contract, b.timeframe, b.start): b for b in streamed}
    assert sorted(last.values(), key=lambda b: (b.contract, b.timeframe, b.start)) == EXPECTED


@pytest.mark.anyio
async def test_outputs_have_exactly_the_documented_schema(tape: Path, tmp_path: Path) -> None:
    result = await run(tape, ["1min", "4hr"])
    write_bars(result.bars, tmp_path / "bars.parquet")
    write_bars(result.bars, tmp_path / "bars.csv")
    schema: dict[str, Any] = {
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
    frame = pl.read_parquet(tmp_path / "bars.parquet")
    assert frame.schema == pl.Schema(schema)
    assert str(pq.read_schema(tmp_path / "bars.parquet").field("start").type) == (
        "timestamp[us, tz=UTC]"
    )
    assert frame.row(1) == (
        A, "1min", datetime(2025, 1, 21, 14, 31, tzinfo=UTC), 102.0, 102.0, 99.0, 99.0, 6, 2
    )  # fmt: skip
    text = (tmp_path / "bars.csv").read_text().splitlines()
    assert text[0] == "contract,timeframe,start,open,high,low,close,volume,trades"
    assert text[2] == f"{A},1min,2025-01-21T14:31:00.000000Z,102.0,102.0,99.0,99.0,6,2"
    assert len(text) == 1 + len(EXPECTED)
    assert pl.read_csv(tmp_path / "bars.csv", schema=schema).equals(frame)
    assert files(tmp_path) == ["bars.csv", "bars.parquet", "small.tape"]  # nothing partial left


@pytest.mark.anyio
async def test_empty_tape_writes_empty_outputs(tmp_path: Path) -> None:
    path = tmp_path / "empty.tape"
    path.write_bytes(b"\n\n")
    result = await run(path, ["1min"])
    assert result.bars == [] and result.stats.lines == 0 and result.stats.bars == 0
    write_bars(result.bars, tmp_path / "bars.parquet")
    assert pl.read_parquet(tmp_path / "bars.parquet").shape == (0, 9)


def generated_tape(path: Path, seed: int, frames: int = 1500) -> list[tuple[str, int, float, int]]:
    """A random valid tape (late trades, bursts, 3 contracts) and the trades it holds."""
    rng = random.Random(seed)
    contracts = {"CON.F.US.A": 100.0, "CON.F.US.B": 2000.0, "CON.F.US.C": 5.0}
    now = us("2025-03-09T06:00:00Z")  # spans the DST jump (08:00Z) and a 4hr boundary
    trades: list[tuple[str, int, float, int]] = []
    newest: dict[str, int] = {}
    lines = []
    for _ in range(frames):
        now += rng.randrange(1, 12_000_000)
        contract = rng.choice(list(contracts))
        items = []
        for _ in range(rng.randint(1, 6)):
            contracts[contract] *= 1 + rng.uniform(-0.003, 0.003)
            ts = now - (rng.randrange(50_000_000) if rng.random() < 0.2 else 0)
            ts = max(ts, newest.get(contract, 0) - 50_000_000)  # never stale
            newest[contract] = max(ts, newest.get(contract, ts))
            price, volume = round(contracts[contract], 4), rng.randint(1, 9)
            text = datetime.fromtimestamp(ts / 1e6, UTC).isoformat()
            items.append(item(price, volume, text))
            trades.append((contract, ts, price, volume))
        t = (now + rng.randrange(1_000, 3_000_000)) / 1e6
        lines.append(json.dumps({"t": t, "hub": "market", "target": "GatewayTrade",
                                 "arguments": [contract, items]}))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return trades


def reference_bars(trades: list[tuple[str, int, float, int]], timeframes: list[str]) -> list[Bar]:
    """An aggregation of exactly these trades, written independently of the bars actor."""
    out: dict[tuple[str, str, int], list[Any]] = {}
    for name in timeframes:
        clock = BarClock(parse_timeframe(name))
        for contract, ts, price, volume in trades:
            key = (contract, name, clock.start_of(ts))
            agg = out.setdefault(key, [ts, price, price, price, ts, price, 0, 0])
            if ts < agg[0]:
                agg[0], agg[1] = ts, price
            if ts >= agg[4]:
                agg[4], agg[5] = ts, price
            agg[2], agg[3] = max(agg[2], price), min(agg[3], price)
            agg[6] += volume
            agg[7] += 1
    return [
        Bar(c, tf, s, a[1], a[2], a[3], a[5], a[6], a[7])
        for (c, tf, s), a in sorted(out.items())
    ]  # fmt: skip


@pytest.mark.anyio
async def test_replay_is_deterministic_and_equals_an_aggregation(tmp_path: Path) -> None:
    path = tmp_path / "random.tape"
    trades = generated_tape(path, seed=7)
    timeframes = ["1min", "5min", "1hr", "4hr"]
    outputs = []
    for i in range(2):
        result = await run(path, timeframes)
        write_bars(result.bars, tmp_path / f"{i}.parquet")
        outputs.append((tmp_path / f"{i}.parquet").read_bytes())
    assert outputs[0] == outputs[1]
    assert result.stats.trades_accepted == len(trades)
    assert result.bars == reference_bars(trades, timeframes)


@pytest.mark.anyio
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
async def test_streamed_output_is_the_same_file_as_the_held_one(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "random.tape"
    generated_tape(path, seed=11)
    timeframes = ["1sec", "1min", "4hr"]
    released: list[int] = []
    spill = pxnode.replay._Series._spill

    def spill_counted(self: Any) -> None:
        released.append(self._count)
        spill(self)

    monkeypatch.setattr(pxnode.replay, "SPILL_ROWS", 7)
    monkeypatch.setattr(pxnode.replay._Series, "_spill", spill_counted)
    with anyio.fail_after(LIMIT):
        stats = await replay_to(path, timeframes, tmp_path / f"streamed{suffix}")
    result = await run(path, timeframes)
    write_bars(result.bars, tmp_path / f"held{suffix}")
    streamed = (tmp_path / f"streamed{suffix}").read_bytes()
    assert streamed == (tmp_path / f"held{suffix}").read_bytes() or suffix == ".parquet"
    read = pl.read_parquet if suffix == ".parquet" else pl.read_csv
    assert read(tmp_path / f"streamed{suffix}").equals(read(tmp_path / f"held{suffix}"))
    assert stats == result.stats and stats.bars == len(result.bars) > 7
    # Bars left memory during the replay, not only at its end.
    assert len(released) > 3 and sum(released) == stats.bars
    assert not (tmp_path / ".streamed.parquet.partial").exists()


@pytest.mark.anyio
async def test_frames_told_one_by_one_give_the_same_bars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "random.tape"
    generated_tape(path, seed=11, frames=400)
    batched = await run(path, ["1min", "1hr"])
    monkeypatch.setattr("actors.tape.player.MAX_FRAMES", 1)
    assert await run(path, ["1min", "1hr"]) == batched


def stepped_back(seconds: Iterable[int], back_to: int, traded: int) -> list[str]:
    """A trade on each of ``seconds`` (from 2025-03-09T06:00:00Z, ``t`` its own time), then a
    line whose ``t`` steps back to ``back_to`` with a trade at ``traded``."""
    start = unix("2025-03-09T06:00:00Z")

    def at(offset: int) -> str:
        return datetime.fromtimestamp(start + offset, UTC).isoformat()

    lines = [line(at(i), "GatewayTrade", A, [item(100.0, 1, at(i))]) for i in seconds]
    return [*lines, line(at(back_to), "GatewayTrade", A, [item(101.0, 1, at(traded))])]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("lines", "timeframe"),
    [
        (stepped_back(range(66), -1000, -1000), "1sec"),  # once beyond the 1sec ring: lost
        (stepped_back([0, *range(100, 140)], 10, 5), "1min"),  # once written twice
    ],
    ids=["behind-the-ring", "behind-the-written"],
)
async def test_a_tape_stepping_back_cannot_reach_behind_the_bars_already_final(
    tmp_path: Path, lines: list[str], timeframe: str
) -> None:
    """Found by an independent oracle: a reference that restarted when ``t`` stepped back
    accepted trades older than the bars the rings keep and the writer has written."""
    path = tmp_path / "back.tape"
    path.write_text("\n".join(lines) + "\n")
    result = await run(path, [timeframe])
    keys = [(b.contract, b.timeframe, b.start) for b in result.bars]
    assert len(keys) == len(set(keys))
    assert sum(b.trades for b in result.bars) == result.stats.trades_accepted == len(lines) - 1
    assert result.stats.trades_rejected["stale"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("bars", "validation", "late"),
    [
        ({"ring_size": 10}, {}, 30),  # a ring smaller than the stale window
        ({}, {"stale_after": 1200.0}, 1050),  # a stale window longer than the default ring
    ],
)
async def test_a_replays_rings_hold_whatever_a_late_trade_can_amend(
    tmp_path: Path, bars: dict[str, Any], validation: dict[str, Any], late: int
) -> None:
    """Found by an independent oracle: the configured ring_size capped a replay's rings,
    and a late trade validation accepted reached no bar."""
    config = NodeConfig(
        bars=msgspec.structs.replace(NodeConfig().bars, **bars),
        validation=msgspec.structs.replace(NodeConfig().validation, **validation),
    )
    lines = stepped_back(range(40 + late), 40 + late, 40)  # the last is `late` s old, in time
    path = tmp_path / "late.tape"
    path.write_text("\n".join(lines) + "\n")
    result = await run(path, ["1sec"], config=config)
    assert result.stats.trades_accepted == len(lines)
    assert sum(b.trades for b in result.bars) == len(lines)


@pytest.mark.anyio
async def test_bad_inputs_are_clear_errors(tape: Path, tmp_path: Path) -> None:
    with pytest.raises(TapeError, match="cannot open tape"):
        await run(tmp_path / "missing.tape", ["1min"])
    for timeframes in (["7min"], [], "1min"):
        with pytest.raises(ConfigError):
            await run(tape, timeframes)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\.parquet or \.csv"):
        write_bars([], tmp_path / "bars.json")


@pytest.mark.anyio
async def test_skipped_frames_are_counted_and_contracts_capped_by_config(tmp_path: Path) -> None:
    """Issue 12 bounds: a tape of many contracts keeps state for ``max_contracts`` of them."""
    contracts = [f"CON.F.US.X{k}.H25" for k in range(4)]
    lines = [
        line("2025-01-21T14:30:10Z", "GatewayTrade", c, [item(100.0, 1, "2025-01-21T14:30:05Z")])
        for c in contracts
    ]
    lines.append(line("2025-01-21T14:30:11Z", "GatewayTrade", A))  # arity 1: malformed
    lines.append(line("2025-01-21T14:30:12Z", "GatewayNews", A, {}))
    path = tmp_path / "many.tape"
    path.write_text("\n".join(lines) + "\n")
    validation = msgspec.structs.replace(NodeConfig().validation, max_contracts=2)
    config = msgspec.structs.replace(NodeConfig(), validation=validation)
    result = await run(path, ["1min"], config=config)
    assert {b.contract for b in result.bars} == set(contracts[:2])
    assert result.stats.trades_accepted == 2
    assert result.stats.frames_skipped == {
        "malformed": 1,
        "unknown_target": 1,
        "over_contract_cap": 2,
    }


def test_the_spill_is_a_lazy_frame_that_honours_projection_filter_and_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output reads the spill through a polars IO source: it must obey pushdowns."""
    monkeypatch.setattr(pxnode.replay, "SPILL_BLOCK", 3)  # several blocks per series
    series = pxnode.replay._Series(tmp_path)
    held = [b for b in EXPECTED if b.contract == A] + [b for b in EXPECTED if b.contract == B]
    for b in held:
        series.add(b)
    frame = series.frame()
    assert frame.collect().equals(pxnode.replay.bars_frame(held))

    def query(lazy: pl.LazyFrame) -> pl.DataFrame:
        picked = lazy.filter(pl.col("volume") > 1).select("contract", "start", "volume")
        return picked.head(4).collect()

    assert query(frame).equals(query(pxnode.replay.bars_frame(held).lazy()))
    assert frame.head(0).collect().height == 0


PROBE = """
import atexit, os, sys
import pxnode.replay as replay
seen = []
frame = replay._Series.frame
def spy(self):
    seen.append(sorted(m for m in ("httpx", "polars", "rich", "trio") if m in sys.modules))
    return frame(self)
replay._Series.frame = spy
atexit.register(lambda: print(seen, os.environ.get("POLARS_MAX_THREADS")))
sys.argv = ["pxnode", "replay", sys.argv[1], "--out", sys.argv[2]]
from pxnode.cli import main
main()
"""


def test_pxnode_replay_loads_polars_only_for_the_write_and_never_trio_httpx_or_rich(
    tape: Path, tmp_path: Path
) -> None:
    """Memory (bench/rss.py): polars is a third of a replay's peak, trio 12 MiB, httpx 9
    (it loads rich, pygments and click); rich is loaded only to draw a progress bar."""
    out = tmp_path / "bars.parquet"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tape), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in strict_env().items() if k != "POLARS_MAX_THREADS"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[[]]", "1"]  # nothing loaded before the write; one thread
    assert pl.read_parquet(out).height > 0
