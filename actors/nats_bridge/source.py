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
incarnations skips what a redelivery after a restart repeats (and starts over
when the stream itself was deleted and created again: its sequences restart).

Theory of operation, for the bars to equal the ingest node's:

* **One consumer per durable.** JetStream shares a durable's messages among
  everyone pulling from it, so two processes on one durable would each see a
  part of the stream. Each incarnation claims the durable before it pulls
  (``claim``: two processes starting together cannot both win); a start that
  loses fails with ``DurableInUse`` (a crashed process holds nothing).
* **The stream's time.** The source, not the node's clock, ticks ``bars``:
  while the consumer is behind (a late start, a restart, an outage) a bar
  closes when the stream's receive times pass its end, as it did on the ingest
  node, not when the wall clock does (which would close every backlog bar after
  its first batch). Behind means messages pending, or the newest trade read
  received more than ``BEHIND_BY`` ago (a stream's end can still be catching up:
  an ingest node republishing after an outage). Once caught up (or after a fetch
  that found nothing) the wall clock ticks, every ``tick_interval``.
* **Warm-up.** A process resuming a durable first reads back, once (a restart
  goes on after what it told: ``Cursor.warmed_to``), the trades of the bars a
  trade after its ack floor can still reach: from the earliest bar start among
  its timeframes of the last acknowledged trade's time less ``reach_back``
  (``stale_after`` + ``grace``), straight into ``bars``, so the forming bars
  hold the whole bar so far, as history gives an ingest node's. Those trades
  were accepted and told before: their shape and time are checked as a
  consumer's validation checks them, but they are neither counted as accepted,
  told to ``topic.trades`` nor acknowledged again.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec

from protocols.hubs import Connected
from protocols.interfaces import ActorContext, Inbox, Ref, optional_ref
from protocols.messages import (
    I64_MAX,
    CountersReported,
    Flush,
    HubMessageReceived,
    HubMessagesReceived,
    Stop,
    Tick,
    Trade,
    TradesAccepted,
)
from protocols.stream import TRADE_DECODER
from protocols.timeframes import bar_start, parse_timeframe
from protocols.timestamps import MAX_AGE_S, MAX_FUTURE_S, TimestampParser

from .bus import connected, ensure_stream, until_lost
from .claim import claim
from .config import NatsConfig
from .reading import decode_trades, read_from, trade_frames, trade_subjects

NEWEST, OLDEST = round(MAX_FUTURE_S * 1_000_000), round(MAX_AGE_S * 1_000_000)  # µs

BEHIND_BY = 2.0
"""Seconds the newest trade read may lie before our clock with the consumer caught up: an
ingest node republishing after an outage can feed a consumer slower than it reads."""


@dataclass(slots=True)
class Cursor:
    """The last stream sequence passed on (in the stream created at ``stream_created``),
    and the counts so far (cumulative, as every counter of the node: a scraper's
    ``_total`` never goes back); made once per node, kept across incarnations."""

    delivered: int = 0
    stream_created: datetime | None = None
    warm_up: tuple[int, int] | None = None
    """(first bar start in µs, stream sequence it ends before) of this process's warm-up."""
    warmed_to: int = 0
    """The last stream sequence the warm-up has read: a restart goes on after it."""
    counters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "received",
                "frames",
                "malformed",
                "other_contract",
                "redelivered",
                "warmed_up",
                "warm_up_rejected",
                "stream_recreated",
            ),
            0,
        )
    )


class NatsSource:
    """Feeds validation from the stream's trades (see the module docstring)."""

    def __init__(
        self,
        config: NatsConfig,
        contracts: Sequence[str],
        cursor: Cursor,
        timeframes: Sequence[str],
        tick_interval: float,
        reach_back: float,
    ) -> None:
        """``reach_back``: seconds a trade may come after a newer one (``stale_after``) and
        a bar may stay open after its end (``grace``): how far before its ack floor a
        resuming process reads the stream back."""
        self.config = config
        self.subjects = trade_subjects(contracts)
        self.contracts = frozenset(contracts)
        self.cursor = cursor
        self.counters = cursor.counters
        self.timeframes = [parse_timeframe(name) for name in timeframes]
        self.reach_back = round(reach_back * 1_000_000)
        self.tick_interval = tick_interval
        self._behind = True  # until a fetch finds the stream's end: ticks are the stream's
        self._timestamps = TimestampParser()

    def __repr__(self) -> str:
        return f"<NatsSource {self.config.url} stream={self.config.stream!r}>"

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        from nats.errors import TimeoutError as FetchTimeout

        validation, bars, stats = ctx.ref("validation"), ctx.ref("bars"), ctx.ref("stats")
        async with connected(self.config) as (client, js, lost), anyio.create_task_group() as tg:
            await ensure_stream(js, self.config)
            await claim(client, self.config)
            start = await self._resume(js)
            if start > 1 and self.cursor.delivered == 0 and self.cursor.warm_up is None:
                self.cursor.warm_up = await self._warm_up_range(js, start)  # a new process
            await self._warm_up(bars)
            self._report(stats)
            sub = await js.pull_subscribe_bind(
                durable=self.config.durable, stream=self.config.stream
            )
            ctx.report_healthy()
            events = optional_ref(ctx, "topic.events")
            if events is not None:
                events.try_tell(Connected("stream"))  # health's verdict on the feed
            tg.start_soon(_until_stopped, inbox, tg.cancel_scope)
            tg.start_soon(until_lost, lost, self.config.url)
            if self.tick_interval > 0:  # 0: no clock (bars close on the stream's time only)
                tg.start_soon(self._tick, bars, ctx)
            while True:
                try:
                    msgs = await sub.fetch(self.config.fetch, timeout=1.0)
                except FetchTimeout:
                    self._behind = False
                    self._report(stats)  # an idle stream's counts are current too
                    continue
                pending = msgs[-1].metadata.num_pending
                with anyio.CancelScope(shield=True):  # told but not acked would come twice
                    frames = self._fresh_frames(msgs)
                    behind = pending > 0 or (
                        bool(frames) and frames[-1].received_at < ctx.wall_time() - BEHIND_BY
                    )
                    # Behind from now, and until this batch's trades are told (no wall
                    # tick may come between them and the stream tick before them).
                    self._behind = self._behind or behind
                    await self._tell(frames, validation, bars)
                    await msgs[-1].ack()
                self._behind = behind
                self._report(stats)

    async def _tick(self, bars: Ref[Any], ctx: ActorContext) -> None:
        """The wall clock's ticks for ``bars``, while the consumer is not behind."""
        deadline = anyio.current_time()
        while True:
            deadline += self.tick_interval
            await anyio.sleep_until(deadline)
            if not self._behind:
                bars.try_tell(Tick(now=ctx.wall_time()))  # ticks carry absolute time

    async def _resume(self, js: Any) -> int:
        """(Re)create the durable consumer at its ack floor; the stream sequence it starts
        at (0: the stream's start).

        A consumer stopped mid-fetch leaves messages delivered but never
        acknowledged; the server would send the next ones first, and with
        ``AckPolicy.ALL`` their ack would cover the skipped ones too. Starting
        again right after the last acknowledged message is exact.
        """
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        created = (await js.stream_info(self.config.stream)).created
        if created != self.cursor.stream_created:
            if self.cursor.stream_created is not None:
                # Deleted and created again (sequences start at 1): nothing in it was seen.
                self.cursor.delivered = 0
                self.counters["stream_recreated"] += 1
            self.cursor.stream_created = created
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
        return start

    async def _warm_up_range(self, js: Any, start: int) -> tuple[int, int]:
        """Where the warm-up reads from (a bar start, µs) and the sequence it stops before.

        The bars forming at the ack floor, and the bars a trade accepted after it can
        still reach (``reach_back``): both go back from the last acknowledged trade's
        time (the message's stored time if it is not a trade: a foreign message there
        is acknowledged too).
        """
        from nats.js.errors import NotFoundError

        try:
            last = await js.get_msg(self.config.stream, start - 1)
        except NotFoundError:
            return 0, 0  # aged out of the stream: nothing before it is left to read
        stored_us = round(last.time.timestamp() * 1_000_000)
        try:
            last_us = self._timestamps.parse(TRADE_DECODER.decode(last.data or b"").ts)
        except msgspec.DecodeError:
            last_us = None
        return self._first_bar(stored_us if last_us is None else last_us, stored_us), start

    def _first_bar(self, last_us: int, stored_us: int) -> int:
        """The earliest bar start of ``last_us - reach_back``; of the stored time's if the
        trade's is one no bar can hold (a foreign trade-shaped message in year 9999)."""
        for moment in (last_us, stored_us):
            back = moment - self.reach_back
            try:
                return min((bar_start(tf, back) for tf in self.timeframes), default=back)
            except ValueError:
                continue
        return stored_us - self.reach_back

    async def _warm_up(self, bars: Ref[Any]) -> None:
        """Tell ``bars`` the trades of ``cursor.warm_up`` not told yet, shape-checked as
        validation would (trades the ingest node accepted, so shape only)."""
        if self.cursor.warm_up is None:
            return
        since, end = self.cursor.warm_up
        if self.cursor.warmed_to + 1 >= end:
            return
        start: datetime | int = (
            self.cursor.warmed_to + 1  # a restart goes on where the last one got to
            if self.cursor.warmed_to
            else datetime.fromtimestamp(since / 1e6, UTC)
        )
        async for trades, last in read_from(self.config, self.subjects, start, before=end):
            accepted = []
            for t in trades:
                if self.contracts and t.contract not in self.contracts:
                    continue  # a contract sharing a subject with ours
                ts = self._timestamps.parse(t.ts)
                if ts is not None and ts < since:
                    continue  # in no bar the warm-up rebuilds
                received_us = t.received_at * 1_000_000  # a float: compared, never rounded
                if (
                    ts is None
                    or not 0.0 < t.price < math.inf
                    or not 0 < t.volume <= I64_MAX
                    or not received_us - OLDEST <= ts <= received_us + NEWEST  # NaN fails too
                ):
                    self.counters["warm_up_rejected"] += 1
                    continue
                accepted.append(Trade(t.contract, ts, t.price, t.volume, t.side, t.received_at))
            if accepted:
                self.counters["warmed_up"] += len(accepted)
                await bars.tell(Tick(now=accepted[0].received_at))
                await bars.tell(TradesAccepted(accepted))
            self.cursor.warmed_to = last
        self.cursor.warmed_to = end - 1

    def _fresh_frames(self, msgs: list[Any]) -> list[HubMessageReceived]:
        """The frames of the trades among ``msgs`` not passed on before."""
        fresh = []
        for msg in msgs:
            sequence = msg.metadata.sequence.stream
            if sequence <= self.cursor.delivered:
                self.counters["redelivered"] += 1
                continue
            self.cursor.delivered = sequence
            fresh.append(msg.data)
        self.counters["received"] += len(fresh)
        return trade_frames(decode_trades(fresh, self.counters, self.contracts))

    async def _tell(
        self, frames: list[HubMessageReceived], validation: Ref[Any], bars: Ref[Any]
    ) -> None:
        if frames:
            self.counters["frames"] += len(frames)
            if self._behind:  # the batch's bars close on its time, before its trades come
                await bars.tell(Tick(now=frames[0].received_at))
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
