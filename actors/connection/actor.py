"""The connection actor: one SignalR hub socket, from token to close.

Theory of operation
-------------------
``run`` is a loop of *sessions*; a session is one socket. It opens a link
(``opening``: token from auth, negotiation unless skipped, websocket upgrade,
SignalR handshake) while a second task keeps reading the inbox:

======================= ==================================================
message while connecting action
======================= ==================================================
Subscribe*/Unsubscribe* update the book (its calls go out once connected)
TokenIssued             hold the newest, judge it once the link is open
ReconnectRequested      nothing: the socket being opened is that reconnect
Stop, end of inbox      cancel the connect (nothing is left open), return
======================= ==================================================

Once open, the session sends every call of the book, tells ``Connected``,
acts on a held token, and then runs four tasks in one task group:

========== ==============================================================
reader     bytes -> wsproto -> codec -> ``HubMessageReceived`` to validation
           (awaited: backpressure, never a drop) and ``topic.raw``; judges
           silence against ``server_timeout`` and every way the socket ends
writer     the only task that sends: drains the outbox in order
heartbeat  every ``keepalive_interval``: SignalR Ping + websocket ping (RTT)
reporter   cumulative counters to stats every ``report_interval``
========== ==============================================================

while the session's own task reads the inbox:

======================= ==================================================
message once open       action
======================= ==================================================
Subscribe*/Unsubscribe* update the book, send the calls that changed
TokenIssued (new token) close cleanly, start a new session (same book)
ReconnectRequested      close cleanly, start a new session (same book)
Stop, end of inbox      close cleanly (SignalR Close + websocket close), return
======================= ==================================================

A ``GatewayLogout`` invocation from the server (the session was logged out)
is not forwarded: auth is told ``RefreshToken``, logs in again and publishes
the new token, whose ``TokenIssued`` reconnects both hubs at once.

A failure (EOF, websocket close from the server, SignalR Close, silence,
refused handshake, HTTP 401) ends the session with ``ConnectionLost`` raised
out of ``run``, after ``Disconnected`` was told: there is no retry loop here,
because the supervisor's backoff and circuit breaker own that decision. Bad
*messages* are not failures: the codec skips them, we count them.

Invariants: a subscription command is never lost (while connecting it goes
into the book, all of whose calls go out once the link is open); only the
writer sends on the stream after the handshake, so frames never interleave (no
lock); a message is forwarded at most once, since nothing is read after our
Close and a new session only forwards what its own socket brings;
``report_healthy`` is called only after the book's calls went out *and* the
server then sent data (any message at all when the book is empty; on the user
hub, whose events come only when the account changes, a successful completion
of one of our calls counts), so a breaker can never close on a socket that is
up but deaf.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Pong
from wsproto.events import Ping as WsPing

from protocols.errors import ConfigError, ConnectionLost
from protocols.hubs import (
    MARKET_EVENTS,
    USER_EVENTS,
    Connected,
    Disconnected,
    HeartbeatMeasured,
    ReconnectRequested,
    SubscribeAccount,
    SubscribeContract,
    UnsubscribeAccount,
    UnsubscribeContract,
)
from protocols.interfaces import ActorContext, Inbox, Ref, optional_ref
from protocols.messages import (
    AuthFailureReported,
    CountersReported,
    HubMessageReceived,
    HubMessagesReceived,
    RefreshToken,
    Stop,
    TokenIssued,
)
from protocols.secrets import redact
from protocols.signalr import BadMessage, Close, Completion, Invocation, Ping, Sentinel, State

from .book import BadCommand, Call, SubscriptionBook
from .config import HubConfig
from .link import STREAM_ERRORS, Link, take
from .opening import MAX_REASON as _MAX_REASON
from .opening import Opener
from .transport import Connect, Endpoint

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("pxnode.connection")

LOGOUT = "GatewayLogout"
"""Sent by the gateway on both hubs when it ends the session (project-x-py listens for it)."""

_MAX_PENDING: Final = 1024  # invocation ids awaiting a Completion


class ConnectionActor:
    """Holds one hub open; see the module docstring.

    ``connect`` is the transport seam (default: TCP, TLS for https/wss URLs);
    ``http`` an httpx transport for negotiation (default: the network).
    """

    def __init__(
        self,
        config: HubConfig,
        book: SubscriptionBook,
        *,
        connect: Connect | None = None,
        http: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if book.hub != config.hub:
            raise ConfigError(f"a {book.hub} book cannot serve the {config.hub} hub")
        self._config = config
        self._book = book
        self._counters: Counter[str] = Counter()
        endpoint = Endpoint.parse(config.url)
        connect = connect if connect is not None else endpoint.default_connect()
        self._opener = Opener(config, endpoint, connect, http, self._counters)
        self._where = self._opener.where
        self._events = frozenset(MARKET_EVENTS if config.hub == "market" else USER_EVENTS)
        self._gauges: dict[str, float] = {"connected": 0.0}
        self._silent_since: float | None = None  # the last socket's, told with Disconnected
        self._healthy = False

    def __repr__(self) -> str:
        state = "connected" if self._gauges["connected"] else "disconnected"
        return f"<ConnectionActor {self._where} {state} subscriptions={len(self._book)}>"

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        hub = self._config.hub
        try:
            while await self._session(inbox, ctx):
                self._counters["reconnects"] += 1
        except ConnectionLost as exc:
            self._counters["failures"] += 1
            logger.warning("%s lost: %s", self._where, exc)
            if exc.status == 401:
                _tell(optional_ref(ctx, "auth"), RefreshToken())
            events = optional_ref(ctx, "topic.events")
            _tell(events, Disconnected(hub, str(exc), self._silent_since))
            raise
        finally:
            self._report(ctx)

    # ------------------------------------------------------------- session

    async def _session(self, inbox: Inbox[Any], ctx: ActorContext) -> bool:
        """One socket from token to close: True to connect again, False to stop."""
        held: list[Any] = []
        link = await self._connect(inbox, ctx, held)
        if link is None:
            logger.info("%s stopped while connecting", self._where)
            return False
        again, reason = False, "closed"
        try:
            async with anyio.create_task_group() as tg:
                link.scope = tg.cancel_scope
                tg.start_soon(self._read, link, ctx)
                tg.start_soon(self._write, link)
                tg.start_soon(self._heartbeat, link, ctx)
                tg.start_soon(self._report_every, ctx)
                again, reason = await self._serve(inbox, link, ctx, held)
                tg.cancel_scope.cancel()
        finally:
            self._gauges["connected"] = 0.0
            self._silent_since = link.data_at
            await self._teardown(link)
        if link.lost is not None:
            raise link.lost
        logger.info("%s closed: %s", self._where, reason)
        events = optional_ref(ctx, "topic.events")
        _tell(events, Disconnected(self._config.hub, reason, self._silent_since))
        return again

    async def _connect(self, inbox: Inbox[Any], ctx: ActorContext, held: list[Any]) -> Link | None:
        """Open a link while obeying the inbox; None if told to stop first.

        What needs the link to be judged lands in ``held``, a Stop last.
        """
        link: Link | None = None
        lost: ConnectionLost | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._hold, inbox, held, tg.cancel_scope)
            try:
                link = await self._opener.open(ctx)
            except ConnectionLost as exc:  # raised below: the task group would wrap it
                lost = exc
            tg.cancel_scope.cancel()
        if held and isinstance(held[-1], Stop):
            if link is not None:  # opened in the same instant: shut it without a word
                await self._teardown(link)
            return None
        if lost is not None:
            raise lost
        return link

    async def _hold(
        self, inbox: Inbox[Any], held: list[Any], connecting: anyio.CancelScope
    ) -> None:
        """The inbox while connecting; cancelled once the link is open."""
        while True:
            try:
                msg = await inbox.receive()
            except anyio.EndOfStream:
                msg = Stop()
            match msg:
                case Stop():
                    held.append(msg)
                    connecting.cancel()
                    return
                case (
                    SubscribeContract()
                    | UnsubscribeContract()
                    | SubscribeAccount()
                    | UnsubscribeAccount()
                ):
                    self._apply(msg)
                case TokenIssued():
                    held[:] = [msg]  # only the newest token counts
                case ReconnectRequested(hub=hub) if hub == self._config.hub:
                    pass  # the socket being opened is that reconnect
                case AuthFailureReported():
                    pass  # auth's failures are its own
                case _:
                    self._ignore(msg)

    async def _serve(
        self, inbox: Inbox[Any], link: Link, ctx: ActorContext, held: list[Any]
    ) -> tuple[bool, str]:
        """Resubscribe, announce, then obey the held messages and the inbox.

        Returns (connect again?, why the socket ends).
        """
        for call in self._book.calls():
            await self._invoke(link, call)
        link.subscribed = True
        self._gauges["connected"] = 1.0
        logger.info("%s connected (%d subscriptions)", self._where, len(self._book))
        connected = Connected(self._config.hub, link.connection_id)
        _tell(optional_ref(ctx, "topic.events"), connected)
        account = optional_ref(ctx, "account") if self._config.hub == "user" else None
        if account is not None:  # its REST searches follow every (re)connect of the user hub
            await account.tell(connected)  # never lost: the account is a BLOCK sink like validation
        for msg in held:
            if (end := await self._obey(link, msg)) is not None:
                return end
        while True:
            try:
                msg = await inbox.receive()
            except anyio.EndOfStream:
                msg = Stop()
            if (end := await self._obey(link, msg)) is not None:
                return end

    async def _obey(self, link: Link, msg: Any) -> tuple[bool, str] | None:
        """Act on one message once open; the session's end, if it is one."""
        match msg:
            case Stop():
                await self._close(link)
                return False, "stopped"
            case (
                SubscribeContract()
                | UnsubscribeContract()
                | SubscribeAccount()
                | UnsubscribeAccount()
            ):
                for call in self._apply(msg):
                    await self._invoke(link, call)
            case TokenIssued(token=token) if token != link.token:
                await self._close(link)
                return True, "token refreshed"
            case ReconnectRequested(hub=hub, reason=why) if hub == self._config.hub:
                await self._close(link)
                return True, f"reconnect requested: {str(why)[:_MAX_REASON]}"
            case TokenIssued() | AuthFailureReported():
                pass  # our token is still the newest; auth's failures are its own
            case _:
                self._ignore(msg)
        return None

    def _apply(self, command: Any) -> list[Call]:
        """Update the book: the calls that changed (none for a bad command, counted)."""
        try:
            return self._book.apply(command)
        except BadCommand as exc:
            self._counters[f"commands_rejected.{exc.reason}"] += 1
            logger.warning("%s: rejected %s: %s", self._where, type(command).__name__, exc)
            return []

    def _ignore(self, msg: Any) -> None:
        self._counters["commands_rejected.unknown"] += 1
        logger.warning("%s: ignoring %s", self._where, type(msg).__name__)

    async def _invoke(self, link: Link, call: Call) -> None:
        if link.codec.state is not State.OPEN:
            return  # the server closed the hub under us: the book resubscribes on the next one
        target, arguments = call
        ident = str(next(link.ids))
        link.pending[ident] = target
        if len(link.pending) > _MAX_PENDING:  # a server that never completes
            del link.pending[next(iter(link.pending))]
        await link.outbox.send(link.text(Invocation(target, list(arguments), ident)))
        self._counters["calls"] += 1

    async def _close(self, link: Link) -> None:
        """SignalR Close, then websocket close; wait (bounded) for the server's answer."""
        link.closing = True
        with anyio.move_on_after(self._config.close_timeout):
            if link.ws.state is ConnectionState.OPEN:
                if link.codec.state is State.OPEN:  # not after the server's own Close
                    await link.outbox.send(link.text(Close()))
                await link.outbox.send(link.ws.send(CloseConnection(code=1000)))
                await link.closed.wait()

    async def _teardown(self, link: Link) -> None:
        """Answer or send a websocket close if still owed (bounded), then drop the stream."""
        try:
            if link.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                with anyio.move_on_after(self._config.close_timeout):
                    await link.stream.send(link.ws.send(CloseConnection(code=1000)))
        except STREAM_ERRORS:
            pass  # the socket is already gone; nobody is left to tell
        finally:
            link.outbox.close()
            link.outgoing.close()
            await anyio.aclose_forcefully(link.stream)

    # ---------------------------------------------------------------- tasks

    async def _read(self, link: Link, ctx: ActorContext) -> None:
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
                    reason = f": {control.reason[:_MAX_REASON]}" if control.reason else ""
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
                    _tell(optional_ref(ctx, "auth"), RefreshToken(logged_out=True))
                    continue
                data = True
                msg = HubMessageReceived(hub, event.target, event.arguments, at)
                received.append(msg)
                if raw is not None and not _tell(raw, msg):
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
                error = f": {event.error[:_MAX_REASON]}" if event.error else ""
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
            logger.warning("%s: %s failed: %s", self._where, what, completion.error[:_MAX_REASON])
            return False
        return target is not None

    def _on_pong(self, link: Link, pong: Pong, events_ref: Ref[Any] | None) -> None:
        if link.ping is None or bytes(pong.payload) != link.ping[0]:
            return  # unsolicited, or the answer to a ping we stopped waiting for
        rtt = anyio.current_time() - link.ping[1]
        link.ping = None
        self._gauges["rtt"] = rtt
        _tell(events_ref, HeartbeatMeasured(self._config.hub, rtt))

    async def _write(self, link: Link) -> None:
        async for data in link.outgoing:
            try:
                await link.stream.send(data)
            except STREAM_ERRORS as exc:
                detail = redact(f"{type(exc).__name__}: {exc}", link.token)
                link.fail(f"{self._where}: send failed: {detail}")
                return

    async def _heartbeat(self, link: Link, ctx: ActorContext) -> None:
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

    async def _report_every(self, ctx: ActorContext) -> None:
        while True:
            await anyio.sleep(self._config.report_interval)
            self._report(ctx)

    def _report(self, ctx: ActorContext) -> None:
        self._gauges["subscriptions"] = float(len(self._book))
        report = CountersReported(
            source=f"connection_{self._config.hub}",
            counters=dict(self._counters),
            gauges=dict(self._gauges),
        )
        _tell(optional_ref(ctx, "stats"), report)


def _tell(ref: Ref[Any] | None, msg: Any) -> bool:
    """``try_tell`` to a ref the node may not have."""
    return ref is not None and ref.try_tell(msg)
