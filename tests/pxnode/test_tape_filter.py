"""A filtered replay gives exactly the bars of a tape holding only the chosen trades."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from protocols.errors import ConfigError
from pxnode.replay import replay
from pxnode.tape_filter import TapeFilter

CONTRACTS = ("CON.F.US.MES.H25", "CON.F.US.MNQ.H25", "CON.F.US.MGC.H25")
START = datetime(2025, 1, 21, 14, 30, tzinfo=UTC)
SINCE, UNTIL = START + timedelta(minutes=2, seconds=17), START + timedelta(minutes=7, seconds=41)
TIMEFRAMES = ["1min", "5min"]


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def random_tape(seed: int) -> list[dict[str, Any]]:
    """Trades of three contracts over ten minutes, some late, some malformed, and quotes."""
    rng = random.Random(seed)
    prices = dict.fromkeys(CONTRACTS, 100.0)
    records: list[dict[str, Any]] = []
    for i in range(400):
        received = START + timedelta(seconds=i * 1.5)
        contract = rng.choice(CONTRACTS)
        items: list[Any] = []
        for _ in range(rng.randint(1, 3)):
            prices[contract] += rng.choice((-0.25, 0.0, 0.25))
            ts = received - timedelta(seconds=rng.choice((0.0, 0.2, 0.7, 3.0)))
            items.append({"symbolId": "X", "price": prices[contract], "timestamp": stamp(ts),
                          "type": rng.randint(0, 1), "volume": rng.randint(1, 4)})  # fmt: skip
        if i % 37 == 0:
            items.append({"symbolId": "X", "price": 1.0, "timestamp": "never", "type": 0,
                          "volume": 1})  # fmt: skip
        records.append({"t": received.timestamp(), "hub": "market", "target": "GatewayTrade",
                        "arguments": [contract, items]})  # fmt: skip
        if i % 50 == 0:
            records.append({"t": received.timestamp(), "hub": "market", "target": "GatewayQuote",
                            "arguments": [contract, {"lastPrice": prices[contract]}]})  # fmt: skip
    return records


def by_hand(records: list[dict[str, Any]], wanted: set[str]) -> list[dict[str, Any]]:
    """The tape that holds only the chosen trades, written without pxnode's code."""
    kept: list[dict[str, Any]] = []
    for record in records:
        contract, payload = record["arguments"]
        if contract not in wanted:
            continue
        if record["target"] == "GatewayTrade":
            payload = [
                item
                for item in payload
                if item["timestamp"] == "never"
                or SINCE <= datetime.fromisoformat(item["timestamp"]) < UNTIL
            ]
            if not payload:
                continue
        kept.append({**record, "arguments": [contract, payload]})
    return kept


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.mark.anyio
async def test_a_filtered_replay_is_the_replay_of_a_tape_of_only_those_trades(
    tmp_path: Path,
) -> None:
    records = random_tape(seed=3)
    wanted = set(CONTRACTS[:2])
    only = TapeFilter(SINCE, UNTIL, sorted(wanted))
    filtered = await replay(write(tmp_path / "all.tape", records), TIMEFRAMES, only=only)
    expected = await replay(write(tmp_path / "few.tape", by_hand(records, wanted)), TIMEFRAMES)
    assert filtered.bars == expected.bars and len(filtered.bars) > 10
    assert filtered.stats.trades_accepted == expected.stats.trades_accepted
    assert filtered.stats.trades_rejected == expected.stats.trades_rejected
    dropped = filtered.stats.trades_filtered
    assert dropped["before_since"] > 0 and dropped["after_until"] > 0 and dropped["contract"] > 0
    assert filtered.stats.lines_filtered == len(records) - len(by_hand(records, wanted))
    # Bars wholly inside the window are those of the whole tape; the edge bars are partial.
    everything = await replay(tmp_path / "all.tape", TIMEFRAMES)
    inside = [b for b in everything.bars if b.contract in wanted and b.timeframe == "1min"]
    inside = [b for b in inside if SINCE.timestamp() * 1e6 <= b.start < UNTIL.timestamp() * 1e6]
    whole = [b for b in inside if b.start + 60_000_000 <= UNTIL.timestamp() * 1e6]
    assert whole and set(whole) <= set(filtered.bars)


@pytest.mark.anyio
async def test_without_a_filter_nothing_is_counted_as_filtered(tmp_path: Path) -> None:
    result = await replay(write(tmp_path / "t.tape", random_tape(seed=1)[:20]), ["1min"])
    assert result.stats.lines_filtered == 0
    assert set(result.stats.trades_filtered.values()) == {0}


@pytest.mark.anyio
async def test_a_contract_the_tape_lacks_is_an_error(tmp_path: Path) -> None:
    tape = write(tmp_path / "t.tape", random_tape(seed=1)[:20])
    with pytest.raises(ConfigError, match=r"unknown contract 'CON\.F\.US\.NOPE'"):
        await replay(tape, ["1min"], only=TapeFilter(contracts=[CONTRACTS[0], "CON.F.US.NOPE"]))


def test_an_empty_window_or_contract_list_is_refused() -> None:
    with pytest.raises(ConfigError, match="until must be after since"):
        TapeFilter(UNTIL, SINCE)
    with pytest.raises(ConfigError, match="at least one contract"):
        TapeFilter(contracts=[])
