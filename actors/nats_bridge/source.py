"""The stream as a node's source: trades read back from JetStream into validation.

A consuming node has no gateway: this actor stands where the market hub's
connection would, turning each run of stream trades that the ingest node
received together back into the ``GatewayTrade`` frame it came from, with the
same ``received_at``. Validation and bars then judge and aggregate exactly as
on the ingest node, so the bars built from the stream equal the ingest node's.

A durable pull consumer (``AckPolicy.ALL``) keeps the position on the server:
a batch is acknowledged only after validation has passed it downstream (a
``Flush`` barrier), and each start resumes right after the last acknowledged
message, so a consumer killed at any point goes on at the first message it had
not finished; within one process a ``Cursor`` that outlives the actor's
incarnations skips what a redelivery after a restart repeats.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import msgspec

from protocols.gateway import ENCODER as GATEWAY_ENCODER
from protocols.gateway import TradeItem
from protocols.interfaces import ActorContext, Inbox, Ref
from protocols.messages import (
    CountersReported,
    Flush,
    HubMessageReceived,
    HubMessagesReceived,
    Stop,
)
from protocols.stream import TRADE_DECODER, StreamTrade, trade_subject

from .bus import connected, ensure_stream, until_lost
from .config import NatsConfig

CLOCK_SKEW = 60.0
"""Seconds a reader starts early in stream time: the node's and the server's clocks may differ."""


def trade_subjects(contracts: Sequence[str]) -> list[str]:
    """The subjects holding the trades of ``contracts`` (every contract if none)."""
    return [trade_subject(c) for c in contracts] or ["px.trade.>"]


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


def decode_trades(payloads: Iterable[bytes], counters: dict[str, int]) -> list[StreamTrade]:
    """The trades among ``payloads``; anything else on a trade subject is counted and skipped."""
    trades: list[StreamTrade] = []
    for data in payloads:
        try:
            trades.append(TRADE_DECODER.decode(data))
        except msgspec.DecodeError:
            counters["malformed"] += 1
    return trades


@dataclass(slots=True)
class Cursor:
    """The last stream sequence passed on, and the counts so far (cumulative, as every
    counter of the node: a scraper's ``_total`` never goes back); made once per node,
    kept across incarnations."""

    delivered: int = 0
    counters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("received", "frames", "malformed", "redelivered"), 0)
    )


class NatsSource:
    """Feeds validation from the stream's trades (see the module docstring)."""

    def __init__(self, config: NatsConfig, contracts: Sequence[str], cursor: Cursor) -> None:
        self.config = config
        self.subjects = trade_subjects(contracts)
        self.cursor = cursor
        self.counters = cursor.counters

    def __repr__(self) -> str:
        return f"<NatsSource {self.config.url} stream={self.config.stream!r}>"

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        from nats.errors import TimeoutError as FetchTimeout

        validation, stats = ctx.ref("validation"), ctx.ref("stats")
        async with connected(self.config) as (_, js, lost), anyio.create_task_group() as tg:
            await ensure_stream(js, self.config)
            await self._resume(js)
            sub = await js.pull_subscribe_bind(
                durable=self.config.durable, stream=self.config.stream
            )
            ctx.report_healthy()
            tg.start_soon(_until_stopped, inbox, tg.cancel_scope)
            tg.start_soon(until_lost, lost, self.config.url)
            while True:
                try:
                    msgs = await sub.fetch(self.config.fetch, timeout=1.0)
                except FetchTimeout:
                    continue
                with anyio.CancelScope(shield=True):  # told but not acked would come twice
                    await self._pass_on(msgs, validation)
                    await msgs[-1].ack()
                self._report(stats)

    async def _resume(self, js: Any) -> None:
        """(Re)create the durable consumer at its ack floor.

        A consumer stopped mid-fetch leaves messages delivered but never
        acknowledged; the server would send the next ones first, and with
        ``AckPolicy.ALL`` their ack would cover the skipped ones too. Starting
        again right after the last acknowledged message is exact.
        """
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        start = 0
        with contextlib.suppress(NotFoundError):
            info = await js.consumer_info(self.config.stream, self.config.durable)
            start = info.ack_floor.stream_seq + 1
            await js.delete_consumer(self.config.stream, self.config.durable)
        await js.add_consumer(
            self.config.stream,
            ConsumerConfig(
                durable_name=self.config.durable,
                ack_policy=AckPolicy.ALL,
                filter_subjects=self.subjects,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start else DeliverPolicy.ALL,
                opt_start_seq=start or None,
            ),
        )

    async def _pass_on(self, msgs: list[Any], validation: Ref[Any]) -> None:
        fresh = []
        for msg in msgs:
            sequence = msg.metadata.sequence.stream
            if sequence <= self.cursor.delivered:
                self.counters["redelivered"] += 1
                continue
            self.cursor.delivered = sequence
            fresh.append(msg.data)
        self.counters["received"] += len(fresh)
        frames = trade_frames(decode_trades(fresh, self.counters))
        if frames:
            self.counters["frames"] += len(frames)
            await validation.tell(HubMessagesReceived(frames))
            await validation.ask(Flush(), timeout=self.config.ack_timeout)

    def _report(self, stats: Ref[Any]) -> None:
        stats.try_tell(CountersReported(source="nats_source", counters=dict(self.counters)))


async def _until_stopped(inbox: Inbox[Any], scope: anyio.CancelScope) -> None:
    """The node stops a source through its mailbox: a Stop, or the mailbox closing."""
    while batch := await inbox.receive_batch(16):
        if any(isinstance(msg, Stop) for msg in batch):
            break
    scope.cancel()


async def read_stream(
    config: NatsConfig,
    contracts: Sequence[str],
    since: datetime,
    until: datetime | None,
) -> AsyncIterator[list[StreamTrade]]:
    """The stream's trades received in [since, until), in stream order, batch by batch.

    An ephemeral consumer starts at ``since`` in stream time (a trade is published
    after it is received, so nothing received later was stored earlier) and reads to
    the stream's end as it was when reading began.
    """
    from nats.errors import TimeoutError as FetchTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    low = since.timestamp()
    high = until.timestamp() if until is not None else None
    async with connected(config) as (_, js, _lost):
        info = await js.stream_info(config.stream)
        if info.state.messages == 0:
            return
        sub = await js.pull_subscribe(
            "",
            stream=config.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=(since - timedelta(seconds=CLOCK_SKEW)).astimezone(UTC),
                filter_subjects=trade_subjects(contracts),
                inactive_threshold=60.0,
            ),
        )
        counters = {"malformed": 0}
        while True:
            try:
                msgs = await sub.fetch(config.fetch, timeout=1.0)
            except FetchTimeout:
                return
            trades = decode_trades((m.data for m in msgs), counters)
            yield [
                t for t in trades if low <= t.received_at and (high is None or t.received_at < high)
            ]
            if msgs[-1].metadata.num_pending == 0:
                return
