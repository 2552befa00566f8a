"""Hypothesis at the two edges test_fuzz.py leaves: hub payloads and command lines.

* Hub payloads (what the codec hands validation: any target, any hub, arguments of
  any JSON shape, the real field names with odd values, bytes that are not JSON,
  deep nesting) -> every frame counted, only well-formed items accepted, never an
  exception; per-contract state stays within ``max_contracts``.
* Command lines (replay, demo, chart with arguments drawn from their own options,
  odd values and stray words) -> exit 0, a one-line ``pxnode: error:`` or a usage
  error, exit 2; never a traceback.
"""

from __future__ import annotations

import json
import math
from itertools import chain
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from actors.validation import ValidationActor, ValidationConfig
from protocols.hubs import USER_EVENTS
from protocols.messages import DepthAccepted, HubMessageReceived, QuoteAccepted, Trade
from pxnode.cli import app
from pxnode.testing import EPOCH

I64_MAX = 2**63 - 1
TARGETS = ["GatewayTrade", "GatewayQuote", "GatewayDepth", *USER_EVENTS, "GatewayLogout", "X"]
FIELDS = [
    "symbolId", "price", "timestamp", "type", "volume", "symbol", "lastPrice", "bestBid",
    "bestAsk", "change", "changePercent", "open", "high", "low", "lastUpdated", "currentVolume",
]  # fmt: skip
CONTRACTS = [f"CON.F.US.C{i}.Z25" for i in range(8)]
CAP = 4

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities too (json.dumps writes them as bare tokens)
    st.text(max_size=20),
    st.sampled_from(["2024-12-31T23:00:00Z", "2024-12-31T23:00:00.123456+00:00", "", "x"]),
    st.sampled_from([I64_MAX, I64_MAX + 1, 2**64, 0, -1, 1e308, 5e-324]),
)
items = st.dictionaries(st.sampled_from(FIELDS), values, max_size=len(FIELDS))
json_any = st.recursive(
    values, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner)
)


def nested(depth: int) -> bytes:
    return b'["C",' + b"[" * depth + b"]" * depth + b"]"


def nested_in_item(depth: int) -> bytes:
    """Deep in a field the typed decoder skips (it found this: a RecursionError)."""
    return b'["C",[{"price":1,"x":' + b"[" * depth + b"]" * depth + b"}]]"


arguments = st.one_of(
    st.tuples(st.sampled_from([*CONTRACTS, "", 5]), st.lists(items, max_size=5) | items).map(
        lambda frame: json.dumps(list(frame)).encode()
    ),
    st.tuples(st.sampled_from(CONTRACTS), st.lists(items, max_size=3)).map(
        lambda frame: json.dumps(list(frame)[1:]).encode()  # the user hub's [payload]
    ),
    json_any.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=64),
    st.integers(min_value=900, max_value=5000).map(nested),
    st.integers(min_value=900, max_value=5000).map(nested_in_item),
)
frames = st.builds(
    lambda hub, target, raw, at: HubMessageReceived(hub, target, msgspec.Raw(raw), at),
    st.sampled_from(["market", "market", "user", "x"]),
    st.sampled_from(TARGETS),
    arguments,
    st.sampled_from([EPOCH, EPOCH + 1e9, math.nan, 0.0]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=12))
def test_hub_payloads_are_only_ever_counted_or_accepted(batch: list[HubMessageReceived]) -> None:
    actor = ValidationActor(ValidationConfig(max_contracts=CAP))
    trades: list[Trade] = []
    quotes: list[QuoteAccepted] = []
    depth: list[DepthAccepted] = []
    user: list[HubMessageReceived] = []
    for frame in batch:
        actor.on_hub_message(frame, trades, quotes, depth, user)
    counters = actor.counters()
    assert counters["frames_received"] == len(batch)
    assert counters["trades_accepted"] == len(trades)
    for t in trades:
        assert t.contract and 0 < t.price < math.inf and 1 <= t.volume <= I64_MAX
    for q in quotes:
        assert all(p is None or 0 < p < math.inf for p in (q.last, q.bid, q.ask))
    assert len({t.contract for t in trades} | {q.contract for q in quotes}) <= CAP
    assert len(actor.contracts()) <= CAP


# ------------------------------------------------------------------ command lines

runner = CliRunner()
TIMEFRAMES = st.sampled_from(["1min", "1min,4hr", "", ",", "0min", "1parsec", "1min" * 40, "-1hr"])
NUMBERS = st.sampled_from(["0", "-1", "1e309", "nan", "inf", "70000", "x", "", "3"])
WORDS = st.sampled_from(["--nope", "-", "--", "x", "--json", "\x00", "é", "--out"])


def option(name: str, value: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return value.map(lambda v: [name, v])


def replay_args(tape: str, tmp: Path) -> st.SearchStrategy[list[str]]:
    outs = st.sampled_from(
        [str(tmp / "b.csv"), str(tmp / "b.parquet"), str(tmp / "b.txt"), str(tmp), "/nope/b.csv"]
    )
    parts = st.lists(
        st.one_of(
            option("--timeframes", TIMEFRAMES),
            option("--out", outs),
            st.just(["--json-stats"]),
            option("--since", st.sampled_from(["2025-01-01", "yesterday", ""])),
            option("--config", st.sampled_from([tape, "/nope.toml", str(tmp)])),
            WORDS.map(lambda w: [w]),
        ),
        max_size=4,
    )
    tapes = st.sampled_from([tape, "/nope/t.jsonl", str(tmp), "/dev/null"])
    return st.tuples(tapes, parts).map(lambda tp: ["replay", tp[0], *chain.from_iterable(tp[1])])


def demo_args() -> st.SearchStrategy[list[str]]:
    parts = st.lists(
        st.one_of(
            option("--timeframes", TIMEFRAMES),
            option("--rate", NUMBERS),
            option("--seed", NUMBERS),
            option("--metrics-port", NUMBERS),
            option("--contracts", st.sampled_from(["MNQ", "NOPE", ",", "CON.F.US.X.Z25"])),
            option("--faults", st.sampled_from(["drop@1", "bogus", "stall@x", "drop@-1:2"])),
            WORDS.map(lambda w: [w]),
        ),
        max_size=3,
    )
    return parts.map(lambda p: ["demo", "--duration", "0", *chain.from_iterable(p)])


def judge(args: list[str]) -> None:
    result = runner.invoke(app, args)
    text = f"{args}\n{result.output}"
    assert result.exit_code in (0, 2), text
    assert "Traceback" not in result.output, text
    if result.exit_code == 2 and "pxnode: error:" in result.stderr:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pxnode: error: "), text


# The directory is the same for every example (a function-scoped tmp_path is not reset
# between examples); each example writes at most its own output files there.
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_replay_command_lines_are_a_result_or_one_line(tmp_path: Path, data: Any) -> None:
    tape = tmp_path / "t.jsonl"
    if not tape.exists():
        line = {"t": EPOCH, "hub": "market", "target": "GatewayTrade", "args": ["C", []]}
        tape.write_text(json.dumps(line) + "\nnot json\n")
    judge(data.draw(replay_args(str(tape), tmp_path)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(demo_args())
def test_demo_command_lines_are_a_result_or_one_line(args: list[str]) -> None:
    judge(args)


def test_a_contract_given_twice_is_one_contract() -> None:
    """Found by the command-line fuzz: the sim's weights no longer matched its contracts."""
    result = runner.invoke(app, ["demo", "--duration", "0", "--contracts", "MNQ,MNQ"])
    assert result.exit_code == 0, result.output
