"""Two processes share one feed through a real JetStream server, through the real CLI."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import polars as pl
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from pxnode.testing import NatsServer
from tests.nats_stream import publish, this_minute, trades_at
from tests.subprocess_env import PXNODE as ENTRY
from tests.subprocess_env import gateway, strict_env

MNQ = "CON.F.US.MNQ.Z25"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(store=str(tmp_path / "js")) as running:
        yield running


def pxnode(*args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [*ENTRY, *args], capture_output=True, text=True, timeout=60, env=strict_env(**(env or {}))
    )


def last_json(stdout: str) -> dict[str, Any]:
    line = stdout.strip().splitlines()[-1]
    decoded: dict[str, Any] = msgspec.json.decode(line)
    return decoded


def trade_sequences(url: str) -> list[int]:
    """The stream sequence of every trade message in the stream."""

    async def read() -> list[int]:
        client = await nats.connect(url)
        try:
            js = client.jetstream()
            config = ConsumerConfig(ack_policy=AckPolicy.NONE)
            sub = await js.pull_subscribe("px.trade.>", stream="PXNODE", config=config)
            out: list[int] = []
            while True:
                msgs = await sub.fetch(1000, timeout=5)
                out += [m.metadata.sequence.stream for m in msgs]
                if msgs[-1].metadata.num_pending == 0:
                    return out
        finally:
            await client.close()

    return asyncio.run(read())


def stream_trade_count(url: str) -> int:
    return len(trade_sequences(url))


def ack_floor(url: str, durable: str) -> int:
    async def read() -> int:
        client = await nats.connect(url)
        try:
            info = await client.jetstream().consumer_info("PXNODE", durable)
            floor: int = info.ack_floor.stream_seq
            return floor
        finally:
            await client.close()

    return asyncio.run(read())


@pytest.mark.slow
def test_record_with_nats_and_replay_of_the_stream_give_the_tapes_bars(
    server: NatsServer, tmp_path: Path
) -> None:
    with gateway("--rate", "400") as url:
        tape = tmp_path / "session.tape"
        done = pxnode(
            "record", str(tape), "--contracts", f"{MNQ},CON.F.US.EP.Z25", "--duration", "3",
            "--json", "--api-url", url, "--market-hub", f"{url}/hubs/market",
            "--user-hub", f"{url}/hubs/user", "--nats", server.url,
            env={"PROJECT_X_USERNAME": "demo", "PROJECT_X_API_KEY": "demo-api-key"},
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    from_tape, from_stream = tmp_path / "tape.parquet", tmp_path / "stream.parquet"
    frames = "1sec,1min"
    replayed = pxnode("replay", str(tape), "--timeframes", frames, "--out", str(from_tape))
    assert replayed.returncode == 0, replayed.stderr
    streamed = pxnode(
        "replay", "--nats", server.url, "--since", "2000-01-01T00:00:00Z",
        "--timeframes", frames, "--out", str(from_stream), "--json-stats",
    )  # fmt: skip
    assert streamed.returncode == 0, streamed.stderr
    tape_bars, stream_bars = pl.read_parquet(from_tape), pl.read_parquet(from_stream)
    assert tape_bars.height >= 4 and tape_bars["contract"].n_unique() == 2
    assert stream_bars.equals(tape_bars)
    assert last_json(streamed.stdout)["trades_accepted"] == stream_trade_count(server.url)


@pytest.mark.slow
def test_consume_in_another_process_resumes_without_gaps_or_duplicates(server: NatsServer) -> None:
    demo = subprocess.Popen(
        [*ENTRY, "demo", "--contracts", "MNQ", "--rate", "300", "--duration", "5", "--json",
         "--nats", server.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=strict_env(),
    )  # fmt: skip
    consume = [
        "consume", "--nats", server.url, "--contracts", MNQ, "--timeframes", "1sec",
        "--durable", "strategy", "--json",
    ]  # fmt: skip
    try:
        time.sleep(2.0)
        first = pxnode(*consume, "--duration", "2")  # stops while the demo still publishes
        assert first.returncode == 0, first.stderr
        floor = ack_floor(server.url, "strategy")
    finally:
        _, demo_err = demo.communicate(timeout=30)
    assert demo.returncode == 0, demo_err
    second = pxnode(*consume, "--duration", "2")
    assert second.returncode == 0, second.stderr
    sequences = trade_sequences(server.url)
    done_first = sum(1 for seq in sequences if seq <= floor)
    assert 0 < last_json(first.stdout)["trades_accepted"] <= done_first < len(sequences)
    # The second process took up exactly where the first one's acknowledgements ended.
    assert last_json(second.stdout)["trades_accepted"] == len(sequences) - done_first


def test_replay_refuses_a_tape_and_nats_together_and_nats_without_since(tmp_path: Path) -> None:
    both = pxnode("replay", str(tmp_path / "t"), "--nats", "nats://x:1", "--out", "b.csv")
    assert both.returncode == 2 and "one of them" in both.stderr
    no_since = pxnode("replay", "--nats", "nats://127.0.0.1:1", "--out", "b.csv")
    assert no_since.returncode == 2 and "--since" in no_since.stderr
    unreachable = pxnode(
        "replay", "--nats", "nats://127.0.0.1:9", "--since", "2026-01-01", "--out", "b.csv"
    )
    assert unreachable.returncode == 2 and "cannot reach NATS" in unreachable.stderr


def gapped_stream(url: str) -> None:
    """Three trades an ingest node accepted: a 60 % move (its own max_spike, or its first
    trade after a restart across a gap) and one after it."""
    asyncio.run(publish(url, trades_at(this_minute(), [100.0, 160.0, 160.25])))


def test_consume_takes_its_config_files_settings_and_every_trade_of_the_stream(
    server: NatsServer, tmp_path: Path
) -> None:
    gapped_stream(server.url)
    config = tmp_path / "consume.toml"
    config.write_text('[nats]\ndurable = "desk"\n')
    done = pxnode(
        "consume", "--nats", server.url, "--config", str(config), "--duration", "2", "--json"
    )
    assert done.returncode == 0, done.stderr
    stats = last_json(done.stdout)
    assert stats["trades_accepted"] == 3, stats
    assert ack_floor(server.url, "desk") == 3


def test_replay_nats_keeps_every_trade_the_stream_holds(server: NatsServer, tmp_path: Path) -> None:
    gapped_stream(server.url)
    out = tmp_path / "bars.csv"
    done = pxnode(
        "replay", "--nats", server.url, "--since", "2000-01-01T00:00:00Z",
        "--timeframes", "1min", "--out", str(out), "--json-stats",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert last_json(done.stdout)["trades_accepted"] == 3
    assert pl.read_csv(out)["volume"].to_list() == [3]


def test_consume_says_what_it_cannot_do_in_one_line(server: NatsServer) -> None:
    """An unreachable server ran silently and exited 0; a symbol (no gateway to look it
    up) matched nothing; a missing stream in replay --nats was a traceback."""
    unreachable = pxnode("consume", "--nats", "nats://127.0.0.1:9", "--duration", "1")
    assert unreachable.returncode == 2 and "cannot reach NATS" in unreachable.stderr
    symbol = pxnode("consume", "--nats", server.url, "--contracts", "MNQ", "--duration", "1")
    assert symbol.returncode == 2 and "not symbols: MNQ" in symbol.stderr
    missing = pxnode(
        "replay", "--nats", server.url, "--since", "2026-01-01", "--stream", "NOPE",
        "--out", "b.csv",
    )  # fmt: skip
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.strip() == f"pxnode: error: NATS at {server.url} has no stream 'NOPE'"
    gapped_stream(server.url)
    absent = pxnode(
        "replay", "--nats", server.url, "--since", "2000-01-01", "--contracts", "CON.F.US.XX.Z25",
        "--out", "b.csv",
    )  # fmt: skip
    assert absent.returncode == 2 and absent.stderr.strip() == (
        "pxnode: error: unknown contract 'CON.F.US.XX.Z25': the stream has no trade of it in"
        " the window"
    )
