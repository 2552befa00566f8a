"""Replay throughput: the real actors against a pure-Python single-function baseline.

Run: .venv/bin/python bench/replay.py [--trades N] [--tape PATH] [--backend trio|asyncio|both]

Both paths read the same generated tape (made once in a temp dir, or ``--tape``)
and build 1min, 5min, 1hr and 4hr bars:

* baseline: one function, one loop: ``json.loads`` per line,
  ``datetime.fromisoformat`` per trade, OHLCV in a dict. It validates only
  price > 0 and volume >= 1, and its 4hr bars are UTC-aligned (floor of the
  epoch), not the 17:00 Chicago session grid: an approximation that flatters it.
* replay: ``pxnode.replay.replay`` -- tape decode → validation (every
  rule of docs/rules.md) → bars (exact bar rules) → writer, through bounded
  mailboxes, as ``pxnode replay`` runs it.
* peer: nautilus_trader's ``TimeBarAggregator`` (Cython) on the same trades,
  one instrument per contract, four aggregators each, its ``TestClock`` driven
  by the trades' times. Its trades are decoded (msgspec) before the clock
  starts, so it times bar building alone; prices are rounded to the test
  instrument's 2 decimals. Skipped with a message where nautilus_trader is not
  installed (``pip install nautilus_trader``: an optional bench dependency).

Printed: trades/s of each path and the ratio replay / baseline, plus the
tape-decode stage alone so a regression can be placed, and the whole
``pxnode replay`` command (interpreter start-up, imports and the Parquet write
included) with its start-up alone, timed on a tape of one line (bytecode written
by the first of four starts; the best of the other three).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
from gen_tape import generate  # bench/ is sys.path[0] when run as a script

from actors.tape import TapeCounts, read_tape
from protocols.gateway import TRADE_ARGS
from protocols.timestamps import TimestampParser
from pxnode.replay import replay

TIMEFRAMES = ["1min", "5min", "1hr", "4hr"]
FRAMES_S = (("1min", 60), ("5min", 300), ("1hr", 3600), ("4hr", 14400))


def baseline(path: Path) -> tuple[int, int]:
    """Decode and aggregate in one plain loop; returns (trade items seen, bars)."""
    bars: dict[tuple[str, str, int], list[float]] = {}
    trades = 0
    with open(path, "rb") as tape:
        for line in tape:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("target") != "GatewayTrade":
                continue
            contract, payload = record["arguments"]
            for item in payload if isinstance(payload, list) else [payload]:
                trades += 1
                try:
                    price, volume = float(item["price"]), int(item["volume"])
                    ts = datetime.fromisoformat(item["timestamp"]).timestamp()
                except (KeyError, TypeError, ValueError):
                    continue
                if not price > 0 or volume < 1:
                    continue
                for name, seconds in FRAMES_S:
                    key = (contract, name, int(ts // seconds) * seconds)
                    bar = bars.get(key)
                    if bar is None:
                        bars[key] = [price, price, price, price, volume, 1]
                    else:
                        if price > bar[1]:
                            bar[1] = price
                        if price < bar[2]:
                            bar[2] = price
                        bar[3] = price
                        bar[4] += volume
                        bar[5] += 1
    return trades, len(bars)


def nautilus_peer(path: Path) -> tuple[float, int, int] | None:
    """(seconds, trades, bars) of nautilus_trader's bar aggregators; None if not installed."""
    try:
        from nautilus_trader.common.component import TestClock
        from nautilus_trader.data.aggregation import TimeBarAggregator
        from nautilus_trader.model.data import BarType, TradeTick
        from nautilus_trader.model.enums import AggressorSide
        from nautilus_trader.model.identifiers import TradeId
        from nautilus_trader.model.objects import Price, Quantity
        from nautilus_trader.test_kit.providers import TestInstrumentProvider
    except ImportError:
        return None
    trades: list[tuple[str, int, float, int]] = []  # decoded before the clock starts
    parse = TimestampParser().parse
    for chunk in read_tape(path, TapeCounts()):
        for record in chunk:
            if record.target != "GatewayTrade":
                continue
            try:
                contract, payload = TRADE_ARGS.decode(record.arguments)
            except msgspec.DecodeError:
                continue
            for item in payload if isinstance(payload, list) else [payload]:
                us = parse(item.timestamp)
                if us is not None and item.price > 0 and item.volume >= 1:
                    trades.append((contract, us * 1000, round(item.price, 2), item.volume))
    clock, bars = TestClock(), list[Any]()
    clock.set_time(min(t[1] for t in trades))
    routes = {}
    for n, contract in enumerate(sorted({t[0] for t in trades})):
        instrument = TestInstrumentProvider.equity(f"C{n}", "XCME")
        aggregators = []
        for spec in ("1-MINUTE", "5-MINUTE", "1-HOUR", "4-HOUR"):
            bar_type = BarType.from_str(f"{instrument.id}-{spec}-LAST-INTERNAL")
            aggregators.append(TimeBarAggregator(instrument, bar_type, bars.append, clock))
        routes[contract] = (instrument.id, aggregators)
    trade_id, buyer = TradeId("1"), AggressorSide.BUYER
    started = time.perf_counter()
    now = 0
    for contract, ts, price, volume in trades:
        if ts > now:
            now = ts
            for handler in clock.advance_time(now):
                handler.handle()
        instrument_id, aggregators = routes[contract]
        size = Quantity(volume, 0)
        tick = TradeTick(instrument_id, Price(price, 2), size, buyer, trade_id, ts, now)
        for aggregator in aggregators:
            aggregator.handle_trade_tick(tick)
    return time.perf_counter() - started, len(trades), len(bars)


def decode_only(path: Path) -> int:
    counts = TapeCounts()
    return sum(len(chunk) for chunk in read_tape(path, counts))


def whole_process(tape: Path, out: Path) -> float:
    """Seconds of the whole ``pxnode replay`` command: start-up, replay and the write.

    Python may write bytecode here even where the environment says not to
    (PYTHONDONTWRITEBYTECODE, set on some sandboxes): an installed package has
    its bytecode, and compiling ~80 modules from source on every start (~0.15 s)
    is not start-up a user pays twice.
    """
    pxnode = Path(sys.executable).with_name("pxnode")
    command = [str(pxnode), "replay", str(tape), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.perf_counter()
    subprocess.run([*command, "--timeframes", ",".join(TIMEFRAMES)], check=True, env=env)
    return time.perf_counter() - started


def report(label: str, seconds: float, trades: int, note: str = "") -> float:
    rate = trades / seconds
    print(f"{label:<36} {seconds:6.2f} s {rate:>12,.0f} trades/s  {note}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--tape", type=Path, help="an existing tape (else one is generated)")
    parser.add_argument("--backend", choices=("trio", "asyncio", "both"), default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tape = args.tape
        if tape is None:
            tape = Path(tmp) / "bench.tape"
            started = time.perf_counter()
            summary = generate(tape, args.trades, seed=1)
            made = time.perf_counter() - started
            size = tape.stat().st_size / 2**20
            print(f"tape: {summary.trades:,} trades in {summary.lines:,} lines, {size:.0f} MiB")
            print(f"      (generated in {made:.1f} s)")
        started = time.perf_counter()
        trades, bars = baseline(tape)
        base = report("baseline (json.loads + dict OHLCV)", time.perf_counter() - started, trades)
        print(f"{'':<36} bars={bars}")

        started = time.perf_counter()
        lines = decode_only(tape)
        seconds = time.perf_counter() - started
        rate = report("tape decode only (read_tape)", seconds, trades, f"{lines:,} records")
        print(f"{'':<36} ratio vs baseline {rate / base:.2f}x")

        peer = nautilus_peer(tape)
        if peer is None:
            print(f"{'nautilus_trader':<36} skipped: not installed (pip install nautilus_trader)")
        else:
            seconds, trades, bars = peer
            rate = report("nautilus TimeBarAggregator (peer)", seconds, trades, "bar building only")
            print(f"{'':<36} bars={bars} ratio vs baseline {rate / base:.2f}x")

        backends = ("trio", "asyncio") if args.backend == "both" else (args.backend,)
        for backend in backends:
            started = time.perf_counter()
            result = anyio.run(replay, tape, TIMEFRAMES, backend=backend)
            seconds = time.perf_counter() - started
            stats = result.stats
            judged = stats.trades_accepted + sum(stats.trades_rejected.values())
            note = f"bars={stats.bars} accepted={stats.trades_accepted:,}"
            rate = report(f"replay via actors ({backend})", seconds, judged, note)
            print(f"{'':<36} ratio vs baseline {rate / base:.2f}x")

        first = Path(tmp) / "first-line.tape"
        with open(tape, "rb") as source:
            first.write_bytes(source.readline())
        # the first start writes the bytecode; the best of the next three is start-up
        starts = [whole_process(first, Path(tmp) / "first-line.parquet") for _ in range(4)]
        startup = min(starts[1:])
        seconds = whole_process(tape, Path(tmp) / "bars.parquet")
        rate = report("pxnode replay, whole process", seconds, judged, "start-up and write too")
        print(f"{'':<36} ratio vs baseline {rate / base:.2f}x; start-up {startup:.2f} s (1 line)")


if __name__ == "__main__":
    main()
