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
acts on a held token, and then runs four tasks (``tasks``) in one task group:

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

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import anyio
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

from protocols.errors import ConfigError, ConnectionLost
from protocols.hubs import (
    Connected,
    Disconnected,
    ReconnectRequested,
    SubscribeAccount,
    SubscribeContract,
    UnsubscribeAccount,
    UnsubscribeContract,
)
from protocols.interfaces import ActorContext, Inbox, optional_ref
from protocols.messages import AuthFailureReported, RefreshToken, Stop, TokenIssued
from protocols.signalr import Close, Invocation, State

from .book import BadCommand, Call, SubscriptionBook
from .config import HubConfig
from .link import STREAM_ERRORS, Link
from .opening import MAX_REASON as _MAX_REASON
from .opening import Opener
from .tasks import SessionTasks, tell
from .transport import Connect, Endpoint

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("pxnode.connection")

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
        self._gauges: dict[str, float] = {"connected": 0.0}
        self._tasks = SessionTasks(config, book, self._where, self._counters, self._gauges)
        self._silent_since: float | None = None  # the last socket's, told with Disconnected

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
                tell(optional_ref(ctx, "auth"), RefreshToken())
            events = optional_ref(ctx, "topic.events")
            tell(events, Disconnected(hub, str(exc), self._silent_since))
            raise
        finally:
            self._tasks.report(ctx)

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
                tg.start_soon(self._tasks.read, link, ctx)
                tg.start_soon(self._tasks.write, link)
                tg.start_soon(self._tasks.heartbeat, link)
                tg.start_soon(self._tasks.report_every, ctx)
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
        tell(events, Disconnected(self._config.hub, reason, self._silent_since))
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
        tell(optional_ref(ctx, "topic.events"), connected)
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
