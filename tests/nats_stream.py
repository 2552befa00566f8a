"""A stream written as an ingest node's bridge writes it, for the consumers under test."""

from __future__ import annotations

import time
from collections.abc import Sequence

from actors.nats_bridge import NatsConfig
from actors.nats_bridge.bus import connected, ensure_stream
from protocols.stream import ENCODER, StreamTrade, iso_us, message_id, trade_subject

MNQ = "CON.F.US.MNQ.Z25"


async def publish(url: str, trades: Sequence[StreamTrade]) -> None:
    """Publish ``trades`` (creating the stream as the bridge does) and wait for the acks."""
    config = NatsConfig(url=url)
    async with connected(config) as (_, js, _lost):
        await ensure_stream(js, config)
        for i, trade in enumerate(trades):
            data = ENCODER.encode(trade)
            await js.publish(
                trade_subject(trade.contract), data, headers={"Nats-Msg-Id": message_id(data, i)}
            )


def this_minute(minutes_ago: int = 0) -> int:
    """The start (µs) of the current minute, or of one ``minutes_ago``."""
    now = int(time.time()) - 60 * minutes_ago
    return (now - now % 60) * 1_000_000


def trades_at(
    start_us: int, prices: Sequence[float], step_us: int = 100_000, contract: str = MNQ
) -> list[StreamTrade]:
    """One trade per price, ``step_us`` apart from ``start_us``, each received 1 ms after it."""
    return [
        StreamTrade(contract, iso_us(start_us + i * step_us), price, 1, 0,
                    (start_us + i * step_us) / 1e6 + 0.001)
        for i, price in enumerate(prices)
    ]  # fmt: skip
