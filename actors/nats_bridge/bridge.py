"""The bridge: accepted trades, quotes, depth and bar events published to JetStream.

Theory of operation
-------------------
The bridge's mailbox subscribes to ``topic.trades``, ``topic.quotes``,
``topic.depth`` and ``topic.bars``; that mailbox is the bounded buffer (its
capacity and overflow policy come from ``NatsConfig``; drops are counted in
its statistics). Each round takes up to ``BATCH_LIMIT`` messages, turns every
item into one stream message (subject, JSON payload, content-derived id) in the
``Outbox``, and publishes the outbox in windows: ``window`` publishes are sent
without waiting, then their acks are awaited together, so a round trip is paid
per window, never per message. Only acknowledged messages leave the outbox.

The outbox is made once per node and handed to every incarnation (like a hub's
subscription book). When NATS goes away the actor fails; the supervisor restarts
it with backoff and the circuit breaker; the next incarnation publishes what the
outbox still holds first, with the same ids, so a message whose ack was lost is
dropped by JetStream's duplicate window instead of stored twice. An outage can
outlast that window (two minutes by default; the breaker waits up to about 17),
so the stream is asked first: per subject, a window's messages are stored in the
order they were sent, so when the stream's last message on a subject is one the
outbox holds, it and every message before it on that subject were stored, and
they leave the outbox unpublished (``stored_before``), except those the server
answered with an error (refused: not stored, whatever came after them). Meanwhile the node goes
on building bars and the mailbox fills; what it cannot hold is blocked
(``overflow = "block"``) or dropped and counted.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any

import anyio

from protocols.interfaces import ActorContext, Inbox, Ref
from protocols.messages import (
    BarClosed,
    BarUpdated,
    CountersReported,
    DepthsAccepted,
    QuotesAccepted,
    Stop,
    TradesAccepted,
)
from protocols.stream import (
    ENCODER,
    BarEvent,
    bar_subject,
    depth_subject,
    quote_subject,
    stream_bar,
    stream_depth,
    stream_quote,
    stream_trade,
    trade_subject,
)

from .bus import connected, ensure_stream, until_lost
from .config import NatsConfig

BATCH_LIMIT = 256
"""Mailbox messages turned into stream messages per round (each may hold many items)."""

COUNTERS = (
    "published",
    "acked",
    "duplicates",
    "republished",
    "stored_before",
    "windows",
    "ignored",
)


class Outbox:
    """Stream messages not acknowledged yet, oldest first, and the ids' bookkeeping.

    Ids are a hash of the payload and its ordinal among identical payloads of the
    same receive time on its subject, so two equal trades in one frame are two
    messages while the same trade published twice is one. ``_frames`` holds one
    receive time per subject (bounded by validation's contract cap).
    """

    __slots__ = ("_frames", "counters", "pending", "refused")

    def __init__(self) -> None:
        self.pending: deque[tuple[str, bytes, str]] = deque()
        self.refused: set[str] = set()  # ids of pending messages the server answered with an error
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._frames: dict[str, tuple[float, dict[bytes, int]]] = {}

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, msg: Any) -> None:
        kind = type(msg)
        if kind is TradesAccepted:
            for trade in msg.trades:
                self._add(trade_subject(trade.contract), stream_trade(trade), trade.received_at)
        elif kind is BarUpdated or kind is BarClosed:
            bar = msg.bar
            event: BarEvent = (
                "closed" if kind is BarClosed else "corrected" if msg.closed else "updated"
            )
            self._add(bar_subject(bar.timeframe, bar.contract), stream_bar(bar, event), None)
        elif kind is QuotesAccepted:
            for quote in msg.quotes:
                self._add(quote_subject(quote.contract), stream_quote(quote), quote.received_at)
        elif kind is DepthsAccepted:
            for depth in msg.depths:
                self._add(depth_subject(depth.contract), stream_depth(depth), depth.received_at)
        else:
            self.counters["ignored"] += 1

    def _add(self, subject: str, payload: Any, received_at: float | None) -> None:
        data = ENCODER.encode(payload)
        ordinal = 0
        if received_at is not None:
            # Per subject: validation tells a batch's trades before its quotes, so the
            # quotes' receive times come between two trade messages of one frame's time.
            frame = self._frames.get(subject)
            if frame is None or frame[0] != received_at:
                frame = self._frames[subject] = (received_at, {})
            seen = frame[1]
            ordinal = seen.get(data, 0)
            seen[data] = ordinal + 1
        digest = hashlib.blake2b(data, digest_size=16, salt=ordinal.to_bytes(16, "little"))
        self.pending.append((subject, data, digest.hexdigest()))


class NatsBridge:
    """Publishes the node's validated stream to JetStream (see the module docstring)."""

    def __init__(self, config: NatsConfig, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox

    def __repr__(self) -> str:
        return f"<NatsBridge {self.config.url} stream={self.config.stream!r}>"

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        stats = ctx.ref("stats")
        async with connected(self.config) as (_, js, lost), anyio.create_task_group() as tg:
            await ensure_stream(js, self.config)
            ctx.report_healthy()
            tg.start_soon(until_lost, lost, self.config.url)
            if self.outbox:
                await self._drop_stored(js)
                self.outbox.counters["republished"] += len(self.outbox)
            await self._publish(js, stats)
            while batch := await inbox.receive_batch(BATCH_LIMIT):
                stop = False
                for msg in batch:
                    if isinstance(msg, Stop):
                        stop = True
                        break
                    self.outbox.add(msg)
                await self._publish(js, stats)
                if stop:
                    break
            tg.cancel_scope.cancel()

    async def _drop_stored(self, js: Any) -> None:
        """Take out of the outbox what the stream stored before the last incarnation
        lost its connection (see the module docstring): on each subject, the messages
        up to the one the stream holds last, by position (a bar event's id can repeat),
        less those the server refused (an error answer: never stored)."""
        from nats.js.errors import NotFoundError

        sent: dict[str, list[str]] = {}
        for subject, _, msg_id in self.outbox.pending:
            sent.setdefault(subject, []).append(msg_id)
        upto: dict[str, int] = {}  # subject -> how many of its first messages were stored
        for subject, ids in sent.items():
            try:
                last = await js.get_msg(self.config.stream, subject=subject)
            except NotFoundError:
                continue  # nothing on it: none of them was stored
            last_id = (last.headers or {}).get("Nats-Msg-Id")
            if last_id in ids:
                upto[subject] = ids.index(last_id) + 1
        if upto:
            refused, kept = self.outbox.refused, []
            seen: dict[str, int] = {}
            for entry in self.outbox.pending:
                n = seen[entry[0]] = seen.get(entry[0], 0) + 1
                if n > upto.get(entry[0], 0) or entry[2] in refused:
                    kept.append(entry)
            self.outbox.counters["stored_before"] += len(self.outbox.pending) - len(kept)
            self.outbox.pending.clear()
            self.outbox.pending.extend(kept)

    async def _publish(self, js: Any, stats: Ref[Any]) -> None:
        """Publish the outbox in windows; a message leaves it only once acknowledged."""
        pending, counters = self.outbox.pending, self.outbox.counters
        while pending:
            window = [pending[i] for i in range(min(self.config.window, len(pending)))]
            futures = [
                await js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id})
                for subject, data, msg_id in window
            ]
            counters["published"] += len(window)
            try:
                with anyio.fail_after(self.config.ack_timeout):
                    acks = [await future for future in futures]
            except BaseException:
                self.outbox.refused.update(
                    msg_id
                    for (_, _, msg_id), future in zip(window, futures, strict=True)
                    if future.done() and not future.cancelled() and future.exception()
                )
                raise
            finally:
                _settle(futures)
            for _ in window:
                self.outbox.refused.discard(pending.popleft()[2])
            counters["acked"] += len(acks)
            counters["duplicates"] += sum(1 for ack in acks if ack.duplicate)
            counters["windows"] += 1
        self._report(stats)

    def _report(self, stats: Ref[Any]) -> None:
        # Cumulative counters: a report that cannot be queued is carried by the next one.
        stats.try_tell(
            CountersReported(
                source="nats_bridge",
                counters=dict(self.outbox.counters),
                gauges={"outbox": float(len(self.outbox))},
            )
        )


def _settle(futures: list[Any]) -> None:
    """After a failed window, cancel the acks still pending and mark the failed ones
    as seen: asyncio would report each unread failure on its own."""
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()
