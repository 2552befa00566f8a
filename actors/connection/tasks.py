"""The tasks of an open session: reader, writer, heartbeat and reporter.

The actor runs the session (open, resubscribe, obey the inbox, close) and
starts these in the session's task group, ``link.scope``. A task that finds
the socket gone calls ``Link.fail``, which keeps the first reason and cancels
that group; the actor raises it once the group is done, so how a socket ended
is judged here and acted on there. One ``SessionTasks`` serves every session
of its actor: what outlives a socket (counters, gauges, having reported
healthy) lives here or is the actor's, shared by reference, never in the
``Link``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import Counter
from typing import Any

import anyio
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Pong
from wsproto.events import Ping as WsPing

from protocols.hubs import MARKET_EVENTS, USER_EVENTS, HeartbeatMeasured
from protocols.interfaces import ActorContext, Ref, optional_ref
from protocols.messages import (
    CountersReported,
    HubMessageReceived,
    HubMessagesReceived,
    RefreshToken,
)
from protocols.secrets import redact
from protocols.signalr import BadMessage, Close, Completion, Invocation, Ping, Sentinel, State

from .book import SubscriptionBook
from .config import HubConfig
from .link import STREAM_ERRORS, Link, take
from .opening import MAX_REASON

logger = logging.getLogger("pxnode.connection")

LOGOUT = "GatewayLogout"
"""Sent by the gateway on both hubs when it ends the session (project-x-py listens for it)."""


class SessionTasks:
    """The bodies of a session's tasks, for every session of one actor.

    ``counters`` and ``gauges`` are the actor's (the opener counts into the
    same counters), so one report to stats covers the whole connection.
    """

    def __init__(
        self,
        config: HubConfig,
        book: SubscriptionBook,
        where: str,
        counters: Counter[str],
        gauges: dict[str, float],
    ) -> None:
        self._config = config
        self._book = book
        self._where = where
        self._counters = counters
        self._gauges = gauges
        self._events = frozenset(MARKET_EVENTS if config.hub == "market" else USER_EVENTS)
        self._healthy = False  # reported once per actor, not once per session

    async def read(self, link: Link, ctx: ActorContext) -> None:
        forward = ctx.ref("validation").tell
        raw = optional_ref(ctx, "topic.raw")
        events_ref = optional_ref(ctx, "topic.events")
        timeout = self._config.server_timeout
        counters = self._counters
        while True:
            await self._dispatch(link, ctx, forward, raw, ctx.wall_time())
            if link.lost is not None:
                return
            with anyio.CancelScope(deadline=link.heard_at + timeout) as silence:
                try:
                    data = await link.stream.receive()
                except anyio.EndOfStream:
                    link.fail(f"{self._where}: the server closed the connection (EOF)")
                    return
                except STREAM_ERRORS as exc:
                    detail = redact(f"{type(exc).__name__}: {exc}", link.token)
                    link.fail(f"{self._where}: receive failed: {detail}")
                    return
            if silence.cancelled_caught:
                link.fail(f"{self._where}: no message from the server in {timeout:g} s (frozen)")
                return
            counters["bytes"] += len(data)
            link.ws.receive_data(data)
            for control in take(link.codec, list(link.ws.events()), self._counters):
                if isinstance(control, WsPing):
                    if link.ws.state is ConnectionState.OPEN:
                        with contextlib.suppress(anyio.WouldBlock):  # busy sending: it is alive
                            link.outbox.send_nowait(link.ws.send(control.response()))
                elif isinstance(control, Pong):
                    self._on_pong(link, control, events_ref)
                elif isinstance(control, CloseConnection):
                    if not link.closing:
                        await self._dispatch(link, ctx, forward, raw, ctx.wall_time())
                    what = (
                        "the server closed the websocket"
                        if link.ws.state is ConnectionState.REMOTE_CLOSING
                        else "websocket protocol error"  # wsproto refused a frame
                    )
                    reason = f": {control.reason[:MAX_REASON]}" if control.reason else ""
                    link.fail(f"{self._where}: {what} (code {control.code}){reason}")
                    return

    async def _dispatch(
        self, link: Link, ctx: ActorContext, forward: Any, raw: Ref[Any] | None, at: float
    ) -> None:
        """Handle every message the codec holds; invocations go out in arrival order.

        The invocations of one socket read travel to validation together, as
        one ``HubMessagesReceived``: one mailbox message per read, not per frame.
        """
        codec, counters, hub = link.codec, self._counters, self._config.hub
        heard = data = closed = False
        received: list[HubMessageReceived] = []
        while True:
            event = codec.next_event()
            if isinstance(event, Sentinel):
                break  # NEED_DATA, or CLOSED after our own Close
            heard = True
            counters["messages"] += 1
            if type(event) is Invocation:
                if event.target == LOGOUT:  # the session is over: log in again, reconnect
                    counters["logouts"] += 1
                    logger.warning("%s: the gateway logged the session out", self._where)
                    tell(optional_ref(ctx, "auth"), RefreshToken(logged_out=True))
                    continue
                data = True
                msg = HubMessageReceived(hub, event.target, event.arguments, at)
                received.append(msg)
                if raw is not None and not tell(raw, msg):
                    counters["raw_dropped"] += 1
                target = event.target if event.target in self._events else "other"
                counters[f"invocations.{target}"] += 1
            elif type(event) is BadMessage:
                counters[f"bad.{event.reason}"] += 1
                logger.debug(
                    "%s: skipped a %s message of %d bytes", self._where, event.reason, event.size
                )
            elif type(event) is Completion:
                # The user hub sends events only when the account changes (and the real
                # gateway nothing on subscribe): a call it accepted is its proof of life.
                data |= self._on_completion(link, event) and hub == "user"
            elif type(event) is Close:
                error = f": {event.error[:MAX_REASON]}" if event.error else ""
                link.fail(f"{self._where}: the server closed the hub{error}")
                closed = True
                break
            elif type(event) is not Ping:
                counters["unexpected"] += 1
        if received:  # what arrived before a Close is still delivered
            link.data_at = at
            await forward(received[0] if len(received) == 1 else HubMessagesReceived(received))
        if closed:
            return
        if heard:
            link.heard_at = anyio.current_time()
            if not self._healthy and link.subscribed and (data or not len(self._book)):
                self._healthy = True
                ctx.report_healthy()

    def _on_completion(self, link: Link, completion: Completion) -> bool:
        """Whether it answers one of our calls, successfully."""
        target = link.pending.pop(completion.invocation_id, None)
        if completion.error is not None:
            self._counters["calls_failed"] += 1
            what = target or "an unknown call"
            logger.warning("%s: %s failed: %s", self._where, what, completion.error[:MAX_REASON])
            return False
        return target is not None

    def _on_pong(self, link: Link, pong: Pong, events_ref: Ref[Any] | None) -> None:
        if link.ping is None or bytes(pong.payload) != link.ping[0]:
            return  # unsolicited, or the answer to a ping we stopped waiting for
        rtt = anyio.current_time() - link.ping[1]
        link.ping = None
        self._gauges["rtt"] = rtt
        tell(events_ref, HeartbeatMeasured(self._config.hub, rtt))

    async def write(self, link: Link) -> None:
        async for data in link.outgoing:
            try:
                await link.stream.send(data)
            except STREAM_ERRORS as exc:
                detail = redact(f"{type(exc).__name__}: {exc}", link.token)
                link.fail(f"{self._where}: send failed: {detail}")
                return

    async def heartbeat(self, link: Link) -> None:
        """Keep the server's client timeout at bay and measure the round trip.

        Frames are queued without waiting: a full outbox means the socket is
        busy sending anyway, and not waiting keeps our Close the last frame.
        """
        for n in itertools.count():
            await anyio.sleep(self._config.keepalive_interval)
            if link.closing or link.codec.state is not State.OPEN:
                return
            payload = n.to_bytes(8, "big")
            try:
                link.outbox.send_nowait(link.text(Ping()))
                link.outbox.send_nowait(link.ws.send(WsPing(payload=payload)))
            except anyio.WouldBlock:
                continue
            link.ping = (payload, anyio.current_time())
            self._counters["pings"] += 1

    async def report_every(self, ctx: ActorContext) -> None:
        while True:
            await anyio.sleep(self._config.report_interval)
            self.report(ctx)

    def report(self, ctx: ActorContext) -> None:
        self._gauges["subscriptions"] = float(len(self._book))
        report = CountersReported(
            source=f"connection_{self._config.hub}",
            counters=dict(self._counters),
            gauges=dict(self._gauges),
        )
        tell(optional_ref(ctx, "stats"), report)


def tell(ref: Ref[Any] | None, msg: Any) -> bool:
    """``try_tell`` to a ref the node may not have."""
    return ref is not None and ref.try_tell(msg)
