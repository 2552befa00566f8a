"""Whole nodes sharing one feed through a real JetStream server (asyncio, loopback, seconds).

An ingest node (simulated gateway) publishes; consuming nodes (no gateway) build
bars from the stream. Nothing here is mocked: the sim is served over TCP and the
NATS server is the real binary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import nats
import pytest
import trio
from nats.js.api import AckPolicy, ConsumerConfig

from actors.nats_bridge import NatsConfig
from protocols.errors import ConfigError
from protocols.messages import ChildRestarting, Trade, TradesAccepted
from protocols.stream import TRADE_DECODER, StreamTrade, stream_trade
from pxnode.sim import SimConfig, gateway_config, running
from pxnode.testing import NatsServer
from supervisors.config import BarsConfig, NodeConfig
from supervisors.mailbox import OverflowPolicy
from supervisors.node import Node, open_node

MNQ = "CON.F.US.MNQ.Z25"
FRAMES = ["1sec", "1min"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py is asyncio only


@pytest.fixture
def server(tmp_path: Any) -> Iterator[NatsServer]:
    with NatsServer(store=str(tmp_path)) as running_server:
        yield running_server


def ingest_config(sim_url: str, nats_url: str) -> NodeConfig:
    return NodeConfig(
        contracts=[MNQ],
        bars=BarsConfig(timeframes=FRAMES),
        tick_interval=0.1,
        history_bars=0,
        nats=NatsConfig(url=nats_url),
        gateway=gateway_config(sim_url),
    )


def consume_config(nats_url: str, durable: str = "pxnode", fetch: int = 1000) -> NodeConfig:
    return NodeConfig(
        contracts=[MNQ],
        bars=BarsConfig(timeframes=FRAMES),
        tick_interval=0.1,
        consume=NatsConfig(url=nats_url, durable=durable, fetch=fetch),
    )


async def stream_trades(url: str) -> list[StreamTrade]:
    client = await nats.connect(url)
    try:
        sub = await client.jetstream().pull_subscribe(
            "px.trade.>", stream="PXNODE", config=ConsumerConfig(ack_policy=AckPolicy.NONE)
        )
        out: list[StreamTrade] = []
        while True:
            msgs = await sub.fetch(1000, timeout=5)
            out += [TRADE_DECODER.decode(m.data) for m in msgs]
            if msgs[-1].metadata.num_pending == 0:
                return out
    finally:
        await client.close()


async def collect(node: Node, seconds: float) -> list[Trade]:
    """Every trade the node accepts for ``seconds`` (a lossless subscription)."""
    accepted: list[Trade] = []
    with node.stream_trades(capacity=100_000, policy=OverflowPolicy.BLOCK) as sub:
        with anyio.move_on_after(seconds):
            async for msg in sub:
                assert isinstance(msg, TradesAccepted)
                accepted += msg.trades
        accepted += [t for msg in sub.drain(100_000) for t in msg.trades]
    return accepted


@asynccontextmanager
async def ingest(nats_url: str, rate: float = 400.0) -> AsyncIterator[Node]:
    sim_config = SimConfig(seed=5, rate=rate, contracts=(MNQ,))
    async with running(sim_config) as sim, open_node(ingest_config(sim.url, nats_url)) as node:
        yield node


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_stream_holds_exactly_the_trades_the_node_accepted(server: NatsServer) -> None:
    async with ingest(server.url) as node:
        accepted = await collect(node, 2.0)
        stopping_bars = await node.bars(MNQ, "1sec", 10_000)
    assert len(accepted) > 200 and stopping_bars.height > 0
    published = await stream_trades(server.url)
    assert published[: len(accepted)] == [stream_trade(t) for t in accepted]


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_server_restart_mid_stream_loses_nothing(server: NatsServer) -> None:
    async with ingest(server.url) as node:
        with node.stream_events(capacity=10_000) as events:
            async with anyio.create_task_group() as tg:

                async def outage() -> None:
                    await anyio.sleep(1.0)
                    server.stop()
                    await anyio.sleep(1.0)
                    server.start()

                tg.start_soon(outage)
                accepted = await collect(node, 5.0)
            restarts = [e for e in events.drain(10_000) if isinstance(e, ChildRestarting)]
        stats = await node.stats()
    assert any(e.child == "nats_bridge" for e in restarts)
    published = await stream_trades(server.url)
    assert published[: len(accepted)] == [stream_trade(t) for t in accepted]
    assert stats.counters["nats_bridge.acked"] >= len(accepted)


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_consuming_node_builds_the_ingest_nodes_bars(server: NatsServer) -> None:
    async with ingest(server.url) as node:
        await collect(node, 2.5)
    published = await stream_trades(server.url)
    async with open_node(consume_config(server.url)) as consumer:
        with anyio.fail_after(10):
            while (await consumer.stats()).counters.get("nats_source.received", 0) < len(published):  # noqa: ASYNC110 - polls a snapshot
                await anyio.sleep(0.05)
        ours = {tf: await consumer.bars(MNQ, tf, 10_000) for tf in FRAMES}
    theirs = bars_of(published)
    for tf in FRAMES:
        got = ours[tf].select("start", "open", "high", "low", "close", "volume", "trades").rows()
        assert got == theirs[tf], tf


def bars_of(trades: list[StreamTrade]) -> dict[str, list[tuple[Any, ...]]]:
    """The bars of ``trades`` by plain aggregation (the oracle of the consuming node)."""
    import polars as pl

    frame = pl.DataFrame(
        {
            "ts": [t.ts for t in trades],
            "price": [t.price for t in trades],
            "volume": [t.volume for t in trades],
        }
    ).with_columns(pl.col("ts").str.to_datetime(time_zone="UTC"))
    out = {}
    for tf, every in (("1sec", "1s"), ("1min", "1m")):
        bars = (
            frame.group_by(pl.col("ts").dt.truncate(every).alias("start"), maintain_order=True)
            .agg(
                pl.col("price").first().alias("open"),
                pl.col("price").max().alias("high"),
                pl.col("price").min().alias("low"),
                pl.col("price").last().alias("close"),
                pl.col("volume").sum().alias("volume"),
                pl.len().alias("trades"),
            )
            .sort("start")
        )
        out[tf] = bars.rows()
    return out


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_stopped_consumer_resumes_without_gaps_or_duplicates(server: NatsServer) -> None:
    async with ingest(server.url) as node:
        await collect(node, 2.0)
    published = await stream_trades(server.url)
    config = consume_config(server.url, durable="resume", fetch=20)
    seen: list[Trade] = []
    for wanted in (100, len(published)):  # the first node is stopped part-way
        async with open_node(config) as node:
            sub = node.stream_trades(capacity=100_000, policy=OverflowPolicy.BLOCK)
            with anyio.fail_after(10):
                while len(seen) < wanted:
                    seen += (await sub.receive()).trades
        with sub:  # what the node accepted while it stopped
            seen += [t for msg in sub.drain(100_000) for t in msg.trades]
        assert len(seen) < len(published) or wanted == len(published)
    assert [stream_trade(t) for t in seen] == published


def test_open_node_refuses_trio_when_nats_is_configured() -> None:
    async def main() -> None:
        async with open_node(consume_config("nats://127.0.0.1:9")):
            pass

    with pytest.raises(ConfigError, match="asyncio only"):
        trio.run(main)


def test_a_node_takes_trades_from_a_gateway_or_from_nats_not_both() -> None:
    with pytest.raises(ConfigError, match="one source"):
        msgspec.structs.replace(ingest_config("http://x", "nats://y:1"), consume=NatsConfig())
