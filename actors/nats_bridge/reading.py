"""Reading the stream's trades back: subjects, decoding, the frames they came in, and
bounded reads from a time or a sequence (``replay --nats`` and a consumer's warm-up).

A read ends where the stream ended when it began: a live node may go on
publishing, and a reader must have an end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from protocols.errors import ConfigError
from protocols.gateway import ENCODER as GATEWAY_ENCODER
from protocols.gateway import TradeItem
from protocols.messages import HubMessageReceived
from protocols.stream import TRADE_DECODER, StreamTrade, trade_subject

from .bus import NatsUnavailable, connected
from .config import NatsConfig

READ_PATIENCE = 10  # empty fetches of 1 s with messages pending before a read gives up

CLOCK_SKEW = 60.0
"""Seconds a reader starts early in stream time: the ingest node's clock, the server's and
ours may differ, and a trade may be received a few seconds before its exchange time."""


def trade_subjects(contracts: Sequence[str]) -> list[str]:
    """The subjects holding the trades of ``contracts`` (every contract if none); two
    contracts can share one (``subject_tokens`` replaces unsafe characters)."""
    return list(dict.fromkeys(trade_subject(c) for c in contracts)) or ["px.trade.>"]


def trade_frames(trades: Iterable[StreamTrade]) -> list[HubMessageReceived]:
    """Consecutive trades of one contract received together, as the frame they came in."""
    frames: list[HubMessageReceived] = []
    run: list[TradeItem] = []
    key: tuple[str, float] | None = None
    for trade in trades:
        if (trade.contract, trade.received_at) != key:
            if run and key is not None:
                frames.append(_frame(key, run))
            key, run = (trade.contract, trade.received_at), []
        run.append(TradeItem(trade.contract, trade.price, trade.ts, trade.side, trade.volume))
    if run and key is not None:
        frames.append(_frame(key, run))
    return frames


def _frame(key: tuple[str, float], items: list[TradeItem]) -> HubMessageReceived:
    contract, received_at = key
    arguments = msgspec.Raw(GATEWAY_ENCODER.encode((contract, items)))
    return HubMessageReceived("market", "GatewayTrade", arguments, received_at)


def decode_trades(
    payloads: Iterable[bytes], counters: dict[str, int], contracts: AbstractSet[str] = frozenset()
) -> list[StreamTrade]:
    """The trades among ``payloads`` (of ``contracts``, if any); anything else on a trade
    subject is counted ``malformed``, the trades of a contract whose subject is shared
    with one of ``contracts`` ``other_contract``."""
    trades: list[StreamTrade] = []
    for data in payloads:
        try:
            trade = TRADE_DECODER.decode(data)
        except msgspec.DecodeError:
            counters["malformed"] += 1
            continue
        if contracts and trade.contract not in contracts:
            counters["other_contract"] += 1
        else:
            trades.append(trade)
    return trades


async def read_stream(
    config: NatsConfig,
    contracts: Sequence[str],
    since: datetime,
    until: datetime | None,
) -> AsyncIterator[list[StreamTrade]]:
    """The stream's trades of ``contracts`` (all if none) received in [since, until), in
    stream order, batch by batch, to the stream's end as it was when reading began (a
    live node may go on publishing)."""
    low = since.timestamp()
    high = until.timestamp() if until is not None else None
    wanted = frozenset(contracts)
    async for trades, _ in read_from(config, trade_subjects(contracts), since):
        yield [
            t
            for t in trades
            if low <= t.received_at
            and (high is None or t.received_at < high)
            and (not wanted or t.contract in wanted)
        ]


async def read_from(
    config: NatsConfig, subjects: list[str], start: datetime | int, before: int | None = None
) -> AsyncIterator[tuple[list[StreamTrade], int]]:
    """The trades on ``subjects`` from ``start`` (a sequence, or a time: then early by
    ``CLOCK_SKEW``, for a trade is published after it is received, so nothing received
    later was stored earlier), batch by batch with the batch's last sequence, up to
    sequence ``before`` (default: the stream's end as it is now, so a stream a live
    node publishes to has an end). ``NatsUnavailable`` if the server stops answering
    short of it."""
    from nats.errors import TimeoutError as FetchTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    async with connected(config) as (_, js, _lost):
        try:
            info = await js.stream_info(config.stream)
        except NotFoundError:
            raise ConfigError(f"NATS at {config.url} has no stream {config.stream!r}") from None
        if info.state.messages == 0:
            return
        end = info.state.last_seq + 1 if before is None else before
        if isinstance(start, datetime):
            where: dict[str, Any] = {
                "deliver_policy": DeliverPolicy.BY_START_TIME,
                "opt_start_time": (start - timedelta(seconds=CLOCK_SKEW)).astimezone(UTC),
            }
        else:
            where = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start}
        sub = await js.pull_subscribe(
            "",
            stream=config.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                filter_subjects=subjects,
                inactive_threshold=60.0,
                **where,
            ),
        )
        counters = {"malformed": 0}
        silent = 0  # fetches in a row that found nothing while messages were pending
        while True:
            try:
                msgs = await sub.fetch(config.fetch, timeout=1.0)
            except FetchTimeout:
                if (await sub.consumer_info()).num_pending == 0:
                    return
                silent += 1
                if silent == READ_PATIENCE:
                    raise NatsUnavailable(
                        f"NATS at {config.url} stopped delivering stream {config.stream!r}"
                    ) from None
                continue
            silent = 0
            msgs = [m for m in msgs if m.metadata.sequence.stream < end]
            if not msgs:
                return
            last = msgs[-1].metadata
            yield decode_trades((m.data for m in msgs), counters), last.sequence.stream
            if last.num_pending == 0 or last.sequence.stream + 1 >= end:
                return
