"""Replay against an independent oracle of the rules in docs/rules.md, written from the text alone.

The oracle is deliberately naive (json.loads, datetime, zoneinfo, one dict of bars) and
shares no code with pxnode. A seeded tape crosses both 2025 DST changes, a month end and
weekends, with out-of-order items, every kind of bad item, and values near each threshold.
"""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from pxnode.replay import replay, write_bars

CHICAGO = ZoneInfo("America/Chicago")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
TIMEFRAMES = ["1sec", "1min", "15min", "1hr", "2hr", "4hr", "1day", "1week", "1month"]


# ------------------------------------------------------------------ the oracle


def parse_ts(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // US


def local_to_us(naive: datetime) -> int:
    """Chicago wall time to UTC µs: ambiguous → first occurrence, missing → next valid instant."""
    first = naive.replace(tzinfo=CHICAGO, fold=0)
    if first.astimezone(UTC).astimezone(CHICAGO).replace(tzinfo=None) == naive:
        return (first - EPOCH) // US
    lo = first.astimezone(UTC) - timedelta(hours=2)
    hi = lo + timedelta(hours=4)
    while hi - lo > US:  # the first instant whose local time is at or after ``naive``
        mid = lo + (hi - lo) / 2
        if mid.astimezone(CHICAGO).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return (hi - EPOCH) // US


def bar_start(name: str, us: int) -> int:
    unit = next(u for u in ("sec", "min", "hr", "day", "week", "month") if name.endswith(u))
    n = int(name[: -len(unit)])
    if unit in ("sec", "min") or name == "1hr":
        step = n * {"sec": 1, "min": 60, "hr": 3600}[unit] * 1_000_000
        return us - us % step
    local = (EPOCH + us * US).astimezone(CHICAGO).replace(tzinfo=None)
    if unit == "hr":
        session = datetime.combine((local - timedelta(hours=17)).date(), time(17))
        slots = [session + timedelta(hours=n * j) for j in range(24 // n + 1)]
        return max(local_to_us(s) for s in slots if local_to_us(s) <= us)
    day = (local + timedelta(hours=7)).date()
    if unit == "week":
        day -= timedelta(days=day.weekday())
    elif unit == "month":
        day = day.replace(day=1)
    return local_to_us(datetime.combine(day - timedelta(days=1), time(17)))


def oracle(lines: list[str], timeframes: list[str]) -> list[tuple[Any, ...]]:
    last: dict[str, list[float]] = {}  # contract -> [newest accepted ts, last accepted price]
    bars: dict[tuple[str, str, int], list[Any]] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        args = record["arguments"]
        received = round(record["t"] * 1e6)
        contract = args[0]
        for item in args[1] if isinstance(args[1], list) else [args[1]]:
            if not isinstance(item, dict):
                continue
            price, volume = item.get("price"), item.get("volume")
            if isinstance(price, bool) or not isinstance(price, int | float):
                continue
            if not 0 < price < math.inf:
                continue
            if isinstance(volume, bool) or not isinstance(volume, int) or volume < 1:
                continue
            ts = parse_ts(item.get("timestamp"))
            if ts is None or ts > received + 5_000_000 or ts < received - 86_400_000_000:
                continue
            state = last.get(contract)
            if state is not None and (
                ts < state[0] - 60_000_000 or abs(price / state[1] - 1) > 0.5
            ):
                continue
            last[contract] = [ts if state is None else max(state[0], ts), price]
            for name in timeframes:
                key = (contract, name, bar_start(name, ts))
                bar = bars.setdefault(key, [ts, price, price, price, ts, price, 0, 0])
                if ts < bar[0]:
                    bar[0], bar[1] = ts, price
                if ts >= bar[4]:
                    bar[4], bar[5] = ts, price
                bar[2], bar[3] = max(bar[2], price), min(bar[3], price)
                bar[6] += volume
                bar[7] += 1
    return sorted((*k, b[1], b[2], b[3], b[5], b[6], b[7]) for k, b in bars.items())


# -------------------------------------------------------------------- the tape


def stamp(moment: datetime, style: int) -> str:
    if style == 0:
        return moment.isoformat()
    if style == 1:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "7Z"  # .NET's 7th digit
    if style == 2:
        return moment.astimezone(timezone(timedelta(hours=-6))).isoformat()
    if style == 3:
        return moment.replace(tzinfo=None).isoformat()  # no offset: UTC
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def nasty_tape(seed: int, per_segment: int) -> list[str]:
    rng = random.Random(seed)
    lines: list[str] = []
    starts = [datetime(2025, 1, 5, 21), datetime(2025, 2, 28, 20), datetime(2025, 3, 8, 20),
              datetime(2025, 11, 1, 20)]  # fmt: skip
    for segment, start in enumerate(starts):
        prices = {f"A{segment}": 100.0, f"B{segment}": 5000.0}
        now = start.replace(tzinfo=UTC)
        for _ in range(per_segment):
            now += timedelta(seconds=rng.expovariate(1 / 40))
            contract = rng.choice(sorted(prices))
            items: list[Any] = []
            for _ in range(rng.randint(1, 5)):
                prices[contract] = round(prices[contract] * (1 + rng.gauss(0, 0.002)), 2)
                when = now - timedelta(seconds=rng.uniform(0, 3))
                item: Any = {"symbolId": f"F.US.{contract}", "price": prices[contract],
                             "timestamp": stamp(when, rng.randrange(5)),
                             "type": rng.randint(0, 1), "volume": rng.randint(1, 9)}  # fmt: skip
                roll = rng.random()
                if roll < 0.02:
                    item["price"] = -1
                elif roll < 0.04:
                    item["volume"] = rng.choice([0, 1.5, True, "2"])
                elif roll < 0.05:
                    item["timestamp"] = rng.choice(["garbage", None, 17])
                elif roll < 0.06:
                    item["timestamp"] = stamp(now + timedelta(seconds=rng.uniform(4, 6)), 0)
                elif roll < 0.07:
                    item["timestamp"] = stamp(now - timedelta(seconds=rng.uniform(55, 70)), 0)
                elif roll < 0.08:
                    item["price"] = prices[contract] * rng.choice([1.49, 1.5, 1.51])
                elif roll < 0.085:
                    item = rng.choice(["not an object", 3, None, [1]])
                elif roll < 0.09:
                    item["price"] = rng.choice(["12.5", None, True])
                elif roll < 0.095:
                    item["timestamp"] = stamp(now - timedelta(hours=25), 0)
                items.append(item)
            payload = items[0] if len(items) == 1 and rng.random() < 0.3 else items
            record = {"t": now.timestamp(), "hub": "market", "target": "GatewayTrade",
                      "arguments": [f"CON.F.US.{contract}", payload]}  # fmt: skip
            lines.append(json.dumps(record))
            if rng.random() < 0.01:
                lines.append("{not json")
    return lines


@pytest.mark.trio
async def test_replay_equals_an_independent_oracle(tmp_path: Path) -> None:
    lines = nasty_tape(seed=7, per_segment=400)
    tape = tmp_path / "nasty.tape"
    tape.write_text("\n".join(lines) + "\n")
    result = await replay(tape, TIMEFRAMES)
    out = tmp_path / "bars.parquet"
    write_bars(result.bars, out)
    got = pl.read_parquet(out)
    got = got.with_columns(start=pl.col("start").dt.epoch("us"))
    expected = oracle(lines, TIMEFRAMES)
    assert result.stats.trades_accepted > 2000  # the tape is mostly good data ...
    assert sum(result.stats.trades_rejected.values()) > 200  # ... with every kind of bad item
    assert all(result.stats.trades_rejected[r] > 0 for r in ("price", "volume", "stale", "spike"))
    assert got.rows() == expected
