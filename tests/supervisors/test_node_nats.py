"""Whole nodes sharing one feed through a real JetStream server (asyncio, loopback, seconds).

An ingest node (simulated gateway) publishes; consuming nodes (no gateway) build
bars from the stream. Nothing here is mocked: the sim is served over TCP and the
NATS server is the real binary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import nats
import pytest
import trio
from nats.js.api import AckPolicy, ConsumerConfig

from actors.nats_bridge import NatsConfig
from actors.validation import ValidationConfig
from protocols.errors import ConfigError, Escalation
from protocols.messages import (
    BarClosed,
    BarUpdated,
    ChildRestarting,
    Flush,
    Trade,
    TradesAccepted,
)
from protocols.stream import TRADE_DECODER, StreamTrade, stream_trade, trade_subject
from pxnode.sim import SimConfig, gateway_config, running
from pxnode.testing import NatsServer
from supervisors.config import BarsConfig, NodeConfig
from supervisors.mailbox import OverflowPolicy
from supervisors.node import Node, open_node
from tests.nats_stream import publish, this_minute, trades_at

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


# --------------------------------------------- consumers: the bars equal the ingest node's


async def received(node: Node, n: int) -> None:
    with anyio.fail_after(15):
        while (await node.stats()).counters.get("nats_source.received", 0) < n:  # noqa: ASYNC110
            await anyio.sleep(0.05)


def one_minute(durable: str, fetch: int = 1000, **changes: Any) -> NodeConfig:
    config = consume_config(durable=durable, fetch=fetch, nats_url=changes.pop("url"))
    return msgspec.structs.replace(config, bars=BarsConfig(timeframes=["1min"]), **changes)


@pytest.mark.anyio
async def test_a_second_consumer_on_a_durable_in_use_is_refused(server: NatsServer) -> None:
    """JetStream shares a durable's messages among its pullers: a second process on it
    would take a part of the stream from the first (and each start deleted the other's
    consumer). It is refused, the first keeps every trade, and once the first has stopped
    the durable is free."""
    trades = trades_at(this_minute(), [100.0 + i for i in range(20)])
    await publish(server.url, trades[:1])
    async with open_node(one_minute("shared", fetch=5, url=server.url)) as first:
        await received(first, 1)
        with pytest.raises(Escalation, match="durable 'shared' of stream 'PXNODE' is in use"):
            with anyio.fail_after(10):
                async with open_node(one_minute("shared", url=server.url)):
                    await anyio.sleep_forever()  # escalates as its source starts
        await publish(server.url, trades[1:])
        await received(first, 20)
    async with open_node(one_minute("shared", url=server.url)) as again:
        await received(again, 0)  # started: nobody answers for the durable any more


@pytest.mark.anyio
async def test_a_consumer_takes_every_trade_an_ingest_node_restarted_across_a_gap_accepted(
    server: NatsServer,
) -> None:
    """An ingest node restarted while the market gapped 7 % has no last price and accepts
    the new level; a consumer that ran throughout, judging spikes again against 100,
    rejected every later trade. The stream's trades were judged where they were accepted."""
    base = this_minute()
    await publish(server.url, trades_at(base, [100.0, 100.0, 107.0, 107.25, 107.5]))
    config = one_minute("gap", url=server.url, validation=ValidationConfig(max_spike=0.05))
    async with open_node(config) as consumer:
        await received(consumer, 5)
        bars = await consumer.bars(MNQ, "1min", 10)
        judged = await consumer.ref("validation").ask(Flush(), timeout=5)
    assert judged["trades_accepted"] == 5
    assert bars.select("open", "high", "low", "close", "volume").rows() == [
        (100.0, 107.5, 100.0, 107.5, 5)
    ]


@pytest.mark.anyio
async def test_a_consumer_behind_closes_each_backlog_bar_once_whole(server: NatsServer) -> None:
    """A consumer reading a backlog (a late start, a restart) closed every backlog bar on
    its wall clock after the first batch that touched it, then corrected it batch by
    batch; on the stream's time each bar closes once, whole, as on the ingest node."""
    minute = this_minute(minutes_ago=60)
    backlog = trades_at(minute, [100.0 + i / 4 for i in range(2000)], step_us=25_000)
    backlog += trades_at(minute + 60_000_000, [90.0])
    await publish(server.url, backlog)
    async with open_node(one_minute("late", fetch=1, url=server.url)) as consumer:
        with consumer.stream_bars(capacity=10_000) as sub:
            await received(consumer, 2001)  # a message a batch: the clock ticks meanwhile
            await anyio.sleep(1.5)  # a fetch finds nothing: the wall clock closes the last bar
            events = sub.drain(10_000)
    closed = [(e.bar.start, e.bar.trades, e.bar.close) for e in events if type(e) is BarClosed]
    assert closed == [(minute, 2000, 599.75), (minute + 60_000_000, 1, 90.0)]
    assert not [e for e in events if type(e) is BarUpdated and e.closed]  # no corrections


@pytest.mark.anyio
async def test_a_consumer_at_a_stream_end_still_catching_up_closes_its_bars_on_stream_time(
    server: NatsServer,
) -> None:
    """An ingest node republishing its outbox after an outage can feed a consumer slower
    than it reads: the stream's end then holds trades received long ago, and the wall
    clock closed their bar before the rest of it came."""
    minute = this_minute(minutes_ago=60)
    trades = trades_at(minute + 1_000_000, [101.0, 102.0, 103.0], step_us=1_000_000)
    await publish(server.url, trades[:1])
    async with open_node(one_minute("outage", url=server.url)) as consumer:
        with consumer.stream_bars(capacity=1000) as sub:
            await received(consumer, 1)
            await anyio.sleep(0.3)  # the clock ticks: the node has read the stream's end
            await publish(server.url, trades[1:])
            await received(consumer, 3)
            await anyio.sleep(1.5)  # a fetch finds nothing: the wall clock closes the bar
            events = sub.drain(1000)
    closed = [(e.bar.start, e.bar.trades, e.bar.close) for e in events if type(e) is BarClosed]
    assert closed == [(minute, 3, 103.0)]
    assert not [e for e in events if type(e) is BarUpdated and e.closed]  # no corrections


@asynccontextmanager
async def resumed(
    url: str,
    durable: str,
    before: int,
    after: Sequence[StreamTrade],
    timeframes: Sequence[str] = ("1min",),
) -> AsyncIterator[Node]:
    """A process on ``durable`` takes the ``before`` messages stored; then ``after`` is
    published, and a new process resuming the durable is yielded once it has them."""
    frames = BarsConfig(timeframes=list(timeframes))
    config = msgspec.structs.replace(one_minute(durable, url=url), bars=frames)
    async with open_node(config) as first:
        await received(first, before)
    await publish(url, after)
    async with open_node(config) as second:
        await received(second, len(after))
        yield second


@pytest.mark.anyio
async def test_a_restarted_consumer_builds_the_whole_forming_bar(server: NatsServer) -> None:
    """A new process resuming a durable starts after its ack floor: the forming bar held
    only the trades after the restart. It first reads back the forming bars' trades, and
    those are neither judged nor told as trades again."""
    trades = trades_at(this_minute(), [100.0, 101.0, 102.0])
    await publish(server.url, trades[:2])
    async with resumed(server.url, "restart", 2, trades[2:]) as second:
        bars = await second.bars(MNQ, "1min", 10)
        counters = (await second.stats()).counters
        judged = await second.ref("validation").ask(Flush(), timeout=5)
    assert bars.select("open", "high", "low", "close", "volume", "trades").rows() == [
        (100.0, 102.0, 100.0, 102.0, 3, 3)
    ]
    assert counters["nats_source.warmed_up"] == 2
    assert judged["trades_accepted"] == 1


@pytest.mark.anyio
async def test_a_restarted_source_goes_on_with_the_warm_up_not_over_it(server: NatsServer) -> None:
    """The warm-up ran again whenever the source restarted before a new message came
    (an idle stream, a NATS blip): bars, which kept its state, counted its trades twice."""
    trades = trades_at(this_minute(), [100.0, 101.0, 102.0])
    await publish(server.url, trades[:2])
    async with open_node(one_minute("twice", url=server.url)) as first:
        await received(first, 2)
    async with open_node(one_minute("twice", url=server.url)) as second:
        with anyio.fail_after(10):
            while (await second.stats()).counters.get("nats_source.warmed_up", 0) < 2:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        server.stop()
        await anyio.sleep(0.5)
        server.start()
        await anyio.sleep(3.0)  # the source restarts (backoff 0.5 s) and resumes
        await publish(server.url, trades[2:])
        await received(second, 1)
        bars = await second.bars(MNQ, "1min", 10)
    assert bars["trades"].to_list() == [3]


@pytest.mark.anyio
async def test_a_foreign_message_at_the_ack_floor_does_not_stop_a_resuming_consumer(
    server: NatsServer,
) -> None:
    """An empty message on a trade subject is counted and acknowledged; a new process
    read it as the last trade before its warm-up, failed, and restarted for ever."""
    trades = trades_at(this_minute(), [100.0, 101.0, 102.0])
    await publish(server.url, trades[:2])
    client = await nats.connect(server.url)
    try:
        await client.jetstream().publish(trade_subject(MNQ), b"")
    finally:
        await client.close()
    async with resumed(server.url, "empty", 3, trades[2:]) as second:
        bars = await second.bars(MNQ, "1min", 10)
    assert bars["trades"].to_list() == [3]


@pytest.mark.anyio
async def test_a_trade_of_year_9999_harms_no_consumer_live_or_warming_up(
    server: NatsServer,
) -> None:
    """Trade-shaped, on a trade subject, time 9999-12-31: no 1day bar can hold it (its
    session cannot be computed), so no consumer may take it, live or in a warm-up."""
    first, second = trades_at(this_minute(), [100.0, 101.0])
    far = msgspec.structs.replace(first, ts="9999-12-31T23:59:59Z", price=102.0)
    await publish(server.url, [first, far])
    async with resumed(server.url, "far", 2, [second], ["1min", "1day"]) as node:
        day = await node.bars(MNQ, "1day", 10)
        counters = (await node.stats()).counters
    assert day["trades"].to_list() == [2]
    assert counters["nats_source.warm_up_rejected"] == 1


@pytest.mark.anyio
async def test_the_warm_up_reaches_back_as_far_as_a_late_trade_can(server: NatsServer) -> None:
    """The ingest node accepts a trade up to ``stale_after`` older than the newest: one
    into the bar before the ack floor's made a bar of itself alone, closed over the
    ingest node's whole one downstream."""
    minute = this_minute(minutes_ago=2)
    before = minute - 60_000_000
    on_time = trades_at(before + 30_000_000, [100.0]) + trades_at(minute + 2_000_000, [101.0])
    (late,) = trades_at(before + 40_000_000, [99.0])
    await publish(server.url, on_time)
    late = msgspec.structs.replace(late, received_at=minute / 1e6 + 3.0)
    async with resumed(server.url, "reach", 2, [late]) as second:
        bars = await second.bars(MNQ, "1min", 10)
    assert bars.select("volume", "trades").rows() == [(2, 2), (1, 1)]


@pytest.mark.anyio
async def test_the_warm_up_judges_the_shape_of_what_it_reads_back(server: NatsServer) -> None:
    """A foreign message shaped as a trade (price 0, volume -5) is rejected live; the
    warm-up told it to bars unjudged."""
    minute = this_minute()
    good = trades_at(minute, [100.0, 101.0, 102.0])
    (bad,) = trades_at(minute + 50_000, [0.0])
    await publish(server.url, [good[0], msgspec.structs.replace(bad, volume=-5), good[1]])
    async with open_node(one_minute("shape", url=server.url)) as first:
        await received(first, 3)
        live = await first.bars(MNQ, "1min", 10)
    await publish(server.url, good[2:])
    async with open_node(one_minute("shape", url=server.url)) as second:
        await received(second, 1)
        bars = await second.bars(MNQ, "1min", 10)
        counters = (await second.stats()).counters
    assert live.select("low", "volume").rows() == [(100.0, 2)]
    assert bars.select("low", "volume").rows() == [(100.0, 3)]
    assert counters["nats_source.warm_up_rejected"] == 1


@pytest.mark.anyio
async def test_a_consumer_takes_a_recreated_streams_trades(server: NatsServer) -> None:
    """The stream deleted and created again starts at sequence 1: a running consumer took
    its new trades for redeliveries of the old ones and dropped them."""
    trades = trades_at(this_minute(), [100.0 + i for i in range(13)])
    await publish(server.url, trades[:10])
    async with open_node(one_minute("recreated", url=server.url)) as consumer:
        await received(consumer, 10)
        client = await nats.connect(server.url)
        try:
            await client.jetstream().delete_stream("PXNODE")
        finally:
            await client.close()
        await publish(server.url, trades[10:])
        await received(consumer, 13)
        counters = (await consumer.stats()).counters
        bars = await consumer.bars(MNQ, "1min", 10)
    assert counters["nats_source.redelivered"] == 0
    assert counters["nats_source.stream_recreated"] == 1
    assert bars["trades"].sum() == 13


@pytest.mark.anyio
async def test_contracts_whose_subjects_collide_are_consumed_apart(server: NatsServer) -> None:
    """``A*B`` and ``A_B`` share a subject: the durable got the same filter twice, which
    JetStream refuses, and the source never started. A consumer of one of them takes only
    its own trades from the shared subject."""
    star, underscore = "CON.F.US.A*B.Z25", "CON.F.US.A_B.Z25"
    base = this_minute()
    await publish(
        server.url,
        trades_at(base, [100.0], contract=star) + trades_at(base, [200.0], contract=underscore),
    )
    both = one_minute("both", url=server.url, contracts=[star, underscore])
    async with open_node(both) as node:
        await received(node, 2)
    alone = one_minute("alone", url=server.url, contracts=[underscore])
    async with open_node(alone) as node:
        with anyio.fail_after(10):
            while (await node.stats()).counters.get("nats_source.other_contract", 0) < 1:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert (await node.bars(star, "1min", 10)).height == 0
        assert (await node.bars(underscore, "1min", 10))["close"].to_list() == [200.0]


@pytest.mark.anyio
async def test_a_consuming_node_is_healthy_while_it_reads_the_stream(server: NatsServer) -> None:
    """It was judged on the gateway's two hubs, which it never opens: `consume --json`
    said healthy false, score 0.5, for ever."""
    from pxnode.snapshot import take_snapshot

    await publish(server.url, trades_at(this_minute(), [100.0]))
    async with open_node(one_minute("healthy", url=server.url)) as consumer:
        await received(consumer, 1)
        with anyio.fail_after(5):
            while not (await consumer.health()).healthy:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        snapshot = await take_snapshot(consumer)
    assert snapshot.healthy and snapshot.health_score == 1.0
    assert snapshot.breaker == {"stream": "closed"} and snapshot.reconnects == {"stream": 0}
