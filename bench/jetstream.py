"""NATS JetStream publishing and consuming, against core NATS in the same run.

Run: .venv/bin/python bench/jetstream.py [--trades N] [--seconds S]
Starts a real nats-server (JetStream, loopback, temporary store) and measures:

* baseline: core NATS publish (no JetStream, no acks) of the same payloads;
* the bridge's maximum: ``Outbox`` + ``NatsBridge`` publishing N trades with acks
  awaited in windows (what the node does), as a ratio of the baseline;
* 20k trades/s sustained: trades offered at 20,000/s for S seconds; the rate
  achieved and the worst backlog (seconds behind the offer schedule);
* publish -> consume latency p50/p99: one trade every millisecond into the bridge,
  received by a push consumer of the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import anyio
import nats

from actors.nats_bridge import NatsBridge, NatsConfig, Outbox
from protocols.messages import Trade, TradesAccepted
from protocols.stream import ENCODER, TRADE_DECODER, stream_trade
from pxnode.testing import FakeContext, MemoryInbox, NatsServer, RecordingRef

MNQ = "CON.F.US.MNQ.Z25"
T0 = 1_764_000_000_000_000


def trades(n: int, start: int = 0) -> list[Trade]:
    return [
        Trade(MNQ, T0 + i, 21000.0 + (i % 8) * 0.25, 1 + i % 3, i % 2, 1_764_000_000.0 + i / 1e4)
        for i in range(start, start + n)
    ]


async def core_publish(url: str, n: int) -> float:
    client = await nats.connect(url)
    payloads = [ENCODER.encode(stream_trade(t)) for t in trades(n)]
    start = time.perf_counter()
    for data in payloads:
        await client.publish("core.trade", data)
    await client.flush()
    elapsed = time.perf_counter() - start
    await client.close()
    return n / elapsed


async def bridge_publish(url: str, n: int, stream: str) -> float:
    config = NatsConfig(url=url, stream=stream)
    inbox, ctx = MemoryInbox(size=1 << 16), FakeContext("nats_bridge", [RecordingRef("stats")])
    batch = 500
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(NatsBridge(config, Outbox()).run, inbox, ctx)
        for i in range(0, n, batch):
            await inbox.send(TradesAccepted(trades(batch, i)))
        inbox.close_sending()
    elapsed = time.perf_counter() - start
    inbox.close()
    return n / elapsed


async def sustained(url: str, rate: int, seconds: float, stream: str) -> tuple[float, float]:
    """Offer ``rate`` trades/s in 1 ms slices; the achieved rate and the worst lag (s)."""
    config = NatsConfig(url=url, stream=stream)
    inbox, ctx = MemoryInbox(size=1 << 16), FakeContext("nats_bridge", [RecordingRef("stats")])
    outbox = Outbox()
    per_slice = rate // 1000
    slices = int(seconds * 1000)
    worst = 0.0
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(NatsBridge(config, outbox).run, inbox, ctx)
        for k in range(slices):
            due = start + k / 1000
            now = time.perf_counter()
            if now < due:
                await anyio.sleep(due - now)
            await inbox.send(TradesAccepted(trades(per_slice, k * per_slice)))
            worst = max(worst, time.perf_counter() - due)
        inbox.close_sending()
    elapsed = time.perf_counter() - start
    inbox.close()
    return outbox.counters["acked"] / elapsed, worst


async def latency(url: str, n: int, stream: str) -> tuple[float, float]:
    """One trade per millisecond through the bridge; lag from the bridge's inbox to a
    push consumer of the stream."""
    config = NatsConfig(url=url, stream=stream)
    inbox, ctx = MemoryInbox(size=1 << 16), FakeContext("nats_bridge", [RecordingRef("stats")])
    client = await nats.connect(url)
    js = client.jetstream()
    sent: dict[float, float] = {}
    lags: list[float] = []
    done = asyncio.Event()

    async def on_message(msg: Any) -> None:
        lags.append(time.perf_counter() - sent[TRADE_DECODER.decode(msg.data).received_at])
        if len(lags) == n:
            done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(NatsBridge(config, Outbox()).run, inbox, ctx)
        await anyio.sleep(0.5)  # the bridge has created the stream
        await js.subscribe("px.trade.>", cb=on_message, ordered_consumer=True)
        for trade in trades(n):
            sent[trade.received_at] = time.perf_counter()
            await inbox.send(TradesAccepted([trade]))
            await anyio.sleep(0.001)
        await asyncio.wait_for(done.wait(), 30)
        inbox.close_sending()
    inbox.close()
    await client.close()
    cuts = statistics.quantiles(lags, n=100)
    return cuts[49] * 1e3, cuts[98] * 1e3


async def drop_stream(url: str, stream: str) -> None:
    """Each run gets an empty stream on ``px.>`` (two streams cannot share subjects)."""
    client = await nats.connect(url)
    await client.jetstream().delete_stream(stream)
    await client.close()


async def main(n: int, seconds: float) -> None:
    with NatsServer() as server:
        base = await core_publish(server.url, n)
        best = await bridge_publish(server.url, n, "BENCHMAX")
        await drop_stream(server.url, "BENCHMAX")
        rate, lag = await sustained(server.url, 20_000, seconds, "BENCHRATE")
        await drop_stream(server.url, "BENCHRATE")
        p50, p99 = await latency(server.url, 2000, "BENCHLAT")
    print(f"core NATS publish (baseline)      {base:>12,.0f} msgs/s  1.00x")
    print(f"bridge, acked in windows (max)    {best:>12,.0f} msgs/s  {best / base:.2f}x")
    print(
        f"bridge at 20k trades/s offered    {rate:>12,.0f} msgs/s  worst backlog {lag * 1e3:.1f} ms"
    )
    print(f"publish -> consume latency        p50 {p50:.2f} ms  p99 {p99:.2f} ms (1 trade per ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.trades, args.seconds))
