"""The simulated gateway on a socket: h11 for REST, wsproto for the hubs, anyio for tasks.

Theory of operation
-------------------
A ``GatewaySim`` holds the shared state (market, tokens, REST handler, live hub
connections) and runs four kinds of task in one task group:

* one per TCP connection: h11 reads a request. REST requests get
  ``RestHandler.handle``'s answer on a keep-alive connection. A websocket upgrade
  of /hubs/{market,user} is authenticated *before* the 101 (a bad token is an
  HTTP 401, as in ASP.NET), then wsproto takes the socket over.
* the market driver: every ``tick`` (or, in a quiet market, when the next event
  is due) it advances the sim to wall time and routes the events to the sessions
  that subscribed, one websocket message per session.
* keepalive: SignalR Ping to idle sessions every ``ping_interval``; a session whose
  client said nothing for ``client_timeout`` is closed (ASP.NET's ClientTimeout).
* the fault runner: sleeps until the next scheduled fault and applies it.

Each hub connection has a reader (websocket → HubSession) and a writer (outbox →
websocket). Only the writer writes the socket, so frames never interleave. The
outbox is bounded: a connection that cannot keep up is dropped and counted, as a
real server drops a slow consumer rather than buffer without end.

Invariant: a connection is in ``connections`` exactly while its reader runs; its
``scope`` cancelled means the socket is abandoned without a close handshake.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from typing import Final, TypeAlias
from urllib.parse import parse_qs

import anyio
import anyio.abc
import h11
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from protocols import signalr
from protocols.hubs import HubName
from pxnode.sim.account import DemoAccounts, UserChange, mark
from pxnode.sim.config import SimConfig
from pxnode.sim.faults import Fault, FaultSchedule, parse_faults
from pxnode.sim.history import SyntheticHistory
from pxnode.sim.httpio import next_event, respond
from pxnode.sim.hubs import (
    HubSession,
    invocation,
    malformed_frames,
    oversize_frame,
    route,
    user_route,
)
from pxnode.sim.market import MarketEvent, MarketSim, contracts_for
from pxnode.sim.rest import MAX_BODY, RestHandler, bearer, unauthorized
from pxnode.sim.tokens import Claims, TokenAuthority

OUTBOX: Final = 1024  # queued websocket messages per connection before it counts as too slow
CHUNK: Final = 256 * 1024  # largest websocket message built by coalescing frames
SLOW_PAUSE: Final = 0.1  # pause after each write while a ``slow`` fault lasts
CLOSE_WAIT: Final = 2.0  # how long a server-initiated close waits for the client's reply
_MAX_HEAD: Final = 64 * 1024

Outgoing: TypeAlias = bytes | Pong | CloseConnection  # bytes: SignalR frames


class _Conn:
    """Server-side state of one hub connection."""

    __slots__ = (
        "closing",
        "last_read",
        "last_write",
        "logged_out",
        "outbox",
        "peer_closed",
        "scope",
        "session",
        "ws",
    )

    def __init__(
        self,
        session: HubSession,
        ws: WSConnection,
        outbox: MemoryObjectSendStream[Outgoing],
        scope: anyio.CancelScope,
    ) -> None:
        self.session, self.ws, self.outbox, self.scope = session, ws, outbox, scope
        self.last_read = self.last_write = anyio.current_time()
        self.closing = False
        self.logged_out = False  # after GatewayLogout: no more data on this socket
        self.peer_closed = anyio.Event()


class GatewaySim:
    """One simulated gateway; ``wall_time`` returns unix seconds (virtual under a mock clock)."""

    def __init__(self, config: SimConfig, *, wall_time: Callable[[], float]) -> None:
        self.config = config
        self.wall_time = wall_time
        start = wall_time()
        specs = contracts_for(config.contracts)
        history = int(config.history_hours * 3600)
        self.sim = MarketSim(config.seed, specs, config.rate, start=start, history_seconds=history)
        self.tokens = TokenAuthority(config.seed, config.token_ttl, wall_time)
        self.accounts = DemoAccounts(start, config.seed)
        self.rest = RestHandler(
            sim=self.sim,
            synthetic=SyntheticHistory(config.seed, specs, start, config.rate),
            tokens=self.tokens,
            accounts=self.accounts,
            credentials=config.credentials,
            clock=wall_time,
            seed=config.seed,
            limits=config.rest_limits,
        )
        self.schedule = FaultSchedule(parse_faults(config.faults), config.seed)
        self.faults: deque[Fault] = deque(maxlen=1000)  # applied, oldest first
        self.connections: set[_Conn] = set()
        self.counters: Counter[str] = Counter()
        self.port = 0
        self._t0 = 0.0
        self._stalled_until = self._slow_until = float("-inf")

    def __repr__(self) -> str:
        return f"<GatewaySim port={self.port} connections={len(self.connections)}>"

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the market driver, keepalive and faults until cancelled.

        Connections come in through ``handle``, from a listener or, in tests, from
        an in-memory stream; fault times count from here.
        """
        self._t0 = anyio.current_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._drive)
            tg.start_soon(self._keepalive)
            tg.start_soon(self._run_faults)
            task_status.started()

    # ------------------------------------------------------------------ HTTP

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one TCP connection until either side closes it."""
        async with stream:
            try:
                await self._http(stream)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.counters["connections_broken"] += 1

    async def _http(self, stream: anyio.abc.ByteStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        while True:
            # Each request, the keep-alive wait before it included, must arrive in time:
            # idle or trickling clients must not pin a file descriptor for ever.
            with anyio.move_on_after(self.config.http_timeout) as waiting:
                received = await self._request(conn, stream)
            if waiting.cancelled_caught:
                self.counters["http_timeouts"] += 1
                return
            if received is None:
                return
            request, body = received
            target = request.target.decode("latin-1")
            path, _, query = target.partition("?")
            if request.method == b"GET" and path in ("/hubs/market", "/hubs/user"):
                hub: HubName = "market" if path == "/hubs/market" else "user"
                await self._upgrade(stream, conn, request, hub, query)
                return
            self.counters["http_requests"] += 1
            method = request.method.decode("latin-1")
            reply = self.rest.handle(method, target, list(request.headers), body)
            await respond(stream, conn, reply)
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    async def _request(
        self, conn: h11.Connection, stream: anyio.abc.ByteStream
    ) -> tuple[h11.Request, bytes] | None:
        """The next request and its body; None when the connection is to end (answered)."""
        request = await next_event(conn, stream, self.counters)
        if not isinstance(request, h11.Request):
            return None
        body = bytearray()
        while not isinstance(
            event := await next_event(conn, stream, self.counters), h11.EndOfMessage
        ):
            if not isinstance(event, h11.Data):
                return None
            body += event.data
            if len(body) > MAX_BODY:
                await respond(stream, conn, (413, [(b"connection", b"close")], b""))
                return None
        return request, bytes(body)

    # ------------------------------------------------------------------ hubs

    async def _upgrade(
        self,
        stream: anyio.abc.ByteStream,
        conn: h11.Connection,
        request: h11.Request,
        hub: HubName,
        query: str,
    ) -> None:
        params = parse_qs(query)
        token = bearer(list(request.headers)) or next(iter(params.get("access_token", ())), None)
        claims = self.tokens.check(token)
        if isinstance(claims, str):
            self.counters["hub_unauthorized"] += 1
            await respond(stream, conn, unauthorized(claims))
            return
        connection_id = next(iter(params.get("id", ())), None)
        if connection_id is not None and self.rest.hub_of(connection_id) != hub:
            await respond(stream, conn, (404, [], b"No Connection with that ID"))
            return
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.initiate_upgrade_connection(list(request.headers), request.target)
            accepted = [ws.send(AcceptConnection()) for e in ws.events() if isinstance(e, Request)]
        except WsRemoteProtocolError:
            accepted = []
        if not accepted:
            await respond(stream, conn, (400, [], b"websocket upgrade expected"))
            return
        await stream.send(accepted[0])
        session = HubSession(
            hub,
            self.sim,
            self.accounts,
            max_message_size=self.config.max_message_size,
            user_snapshot=self.config.user_snapshot,
        )
        await self._run_hub(stream, ws, session, claims, conn.trailing_data[0])

    async def _run_hub(
        self,
        stream: anyio.abc.ByteStream,
        ws: WSConnection,
        session: HubSession,
        claims: Claims,
        leftover: bytes,
    ) -> None:
        self.counters[f"{session.hub}_connections"] += 1
        send, receive = anyio.create_memory_object_stream[Outgoing](OUTBOX)
        async with send, receive, anyio.create_task_group() as tg:
            c = _Conn(session, ws, send, tg.cancel_scope)
            self.connections.add(c)
            try:
                tg.start_soon(self._write, c, stream, receive)
                await self._read(c, stream, leftover)
            finally:
                self.connections.discard(c)
                self.counters["bad_messages"] += session.bad_messages

    async def _read(self, c: _Conn, stream: anyio.abc.ByteStream, data: bytes) -> None:
        ws = c.ws
        while True:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Message):
                    c.last_read = anyio.current_time()
                    raw = event.data.encode() if isinstance(event, TextMessage) else event.data
                    if not raw:
                        continue  # an empty frame carries nothing; b"" would mean the client left
                    reply = c.session.receive(bytes(raw))
                    if reply:
                        self._enqueue(c, reply)
                    if c.session.done:
                        self.close(c)
                elif isinstance(event, Ping):
                    c.last_read = anyio.current_time()
                    self._enqueue(c, event.response())
                elif isinstance(event, CloseConnection):
                    if ws.state is ConnectionState.REMOTE_CLOSING:
                        c.closing = True
                        self._enqueue(c, event.response())
                    else:
                        c.peer_closed.set()
                    return
            try:
                data = await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                c.scope.cancel()
                return

    async def _write(
        self,
        c: _Conn,
        stream: anyio.abc.ByteStream,
        outbox: MemoryObjectReceiveStream[Outgoing],
    ) -> None:
        backlog: deque[Outgoing] = deque()
        while True:
            item = backlog.popleft() if backlog else await outbox.receive()
            ours = False  # does this item start a close handshake?
            if isinstance(item, bytes):
                # Coalesce queued frames into one message: fewer syscalls, same records.
                parts, size = [item], len(item)
                while size < CHUNK and not backlog:
                    try:
                        more = outbox.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    if not isinstance(more, bytes):
                        backlog.append(more)
                        break
                    parts.append(more)
                    size += len(more)
                if c.ws.state is not ConnectionState.OPEN:
                    continue
                data = c.ws.send(TextMessage(b"".join(parts).decode()))
            elif c.ws.state is ConnectionState.OPEN or (
                # once the client has closed, only our answering close may still go out
                isinstance(item, CloseConnection) and c.ws.state is ConnectionState.REMOTE_CLOSING
            ):
                ours = c.ws.state is ConnectionState.OPEN
                data = c.ws.send(item)
            else:
                continue
            await self._pace()
            try:
                await stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # The client is gone (it may have closed while a stall held this
                # write back). Raised here, the error would leave ``_run_hub`` in
                # an exception group that ``handle`` cannot catch, and bring down
                # the listener's task group: the whole gateway.
                self.counters["connections_broken"] += 1
                c.scope.cancel()
                return
            if isinstance(item, bytes):
                # Only SignalR traffic counts: a websocket pong is not a SignalR
                # message, and a client pinging every 15 s must still get our pings.
                c.last_write = anyio.current_time()
            if isinstance(item, CloseConnection):
                if ours:
                    with anyio.move_on_after(CLOSE_WAIT):
                        await c.peer_closed.wait()
                c.scope.cancel()
                return

    async def _pace(self) -> None:
        wait = self._stalled_until - anyio.current_time()
        if wait > 0:
            await anyio.sleep(wait)
            await self._pace()  # the stall may have been extended meanwhile
            return
        if anyio.current_time() < self._slow_until:
            await anyio.sleep(SLOW_PAUSE)

    def _enqueue(self, c: _Conn, item: Outgoing) -> None:
        try:
            c.outbox.send_nowait(item)
        except anyio.WouldBlock:
            if not c.scope.cancel_called:
                self.counters["dropped_slow"] += 1
                c.scope.cancel()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def close(self, c: _Conn, error: str | None = None, *, allow_reconnect: bool = False) -> None:
        """Close one hub connection politely: SignalR Close, then the websocket close."""
        if c.closing:
            return
        c.closing = True
        frame = c.session.close(error, allow_reconnect=allow_reconnect)
        if frame:
            self._enqueue(c, frame)
        self._enqueue(c, CloseConnection(code=1000))

    # --------------------------------------------------------------- drivers

    async def _drive(self) -> None:
        # Every ``tick`` while the market is busy (events batch up); in a quiet market
        # it sleeps until the next event is due, so an idle simulated day costs nothing.
        # A market that fell behind wall time (a process that cannot keep up with its
        # rate) skips what it could not emit in time instead of emitting it all in one
        # step: a step holds the loop for at most ``lag`` seconds of trades, so the node
        # beside it, its timers and a Ctrl-C still get their turn.
        lag = max(0.25, 10 * self.config.tick)
        while True:
            await anyio.sleep(max(self.config.tick, self.sim.next_at - self.wall_time()))
            now = self.wall_time()
            if now - self.sim.next_at > lag:
                self.counters["market_skips"] += 1
                self.sim.skip_to(now - lag)
            self._deliver(self.sim.advance(now))
            self._deliver_user(self.accounts.step(self.wall_time(), mark(self.sim)))

    def _deliver(self, events: list[MarketEvent]) -> None:
        if not events or anyio.current_time() < self._stalled_until:
            return
        by_session = {c.session: c for c in self.connections if not (c.closing or c.logged_out)}
        for session, frames in route(events, by_session):
            c = by_session[session]
            chunk: list[bytes] = []
            size = 0
            for frame in frames:
                if chunk and size + len(frame) > CHUNK:
                    self._enqueue(c, b"".join(chunk))
                    chunk, size = [], 0
                chunk.append(frame)
                size += len(frame)
            self._enqueue(c, b"".join(chunk))

    def _deliver_user(self, changes: list[UserChange]) -> None:
        if not changes or anyio.current_time() < self._stalled_until:
            return
        by_session = {c.session: c for c in self.connections if not (c.closing or c.logged_out)}
        for session, frames in user_route(changes, by_session):
            self._enqueue(by_session[session], b"".join(frames))

    async def _keepalive(self) -> None:
        config = self.config
        while True:
            # a quarter of the shortest period it keeps: pings and timeouts are late by
            # at most that much
            await anyio.sleep(min(config.ping_interval, config.client_timeout) / 4)
            now = anyio.current_time()
            for c in list(self.connections):
                if c.closing:
                    continue
                if now - c.last_read >= config.client_timeout:
                    self.counters["client_timeouts"] += 1
                    if not c.session.open:  # never finished the handshake
                        c.scope.cancel()
                    else:
                        self.close(c, "Server timeout elapsed without receiving a message.")
                elif (
                    c.session.open
                    and now - c.last_write >= config.ping_interval
                    and now >= self._stalled_until
                ):
                    self._enqueue(c, c.session.codec.send(signalr.Ping()))
                    c.last_write = now

    async def _run_faults(self) -> None:
        while (at := self.schedule.next_at) != float("inf"):
            await anyio.sleep_until(self._t0 + at)
            for fault in self.schedule.due(max(at, anyio.current_time() - self._t0)):
                self.apply(fault)

    # ---------------------------------------------------------------- faults

    def apply(self, fault: Fault) -> None:
        """Inject one fault now (the scheduler calls this; tests may too)."""
        self.faults.append(fault)
        self.counters[f"fault_{fault.kind}"] += 1
        _FAULTS[fault.kind](self, fault.arg)

    def _market_conns(self) -> list[_Conn]:
        return [c for c in self.connections if c.session.hub == "market" and c.session.open]

    def _drop(self, _: float) -> None:
        for c in list(self.connections):
            c.scope.cancel()

    def _stall(self, seconds: float) -> None:
        self._stalled_until = max(self._stalled_until, anyio.current_time() + seconds)

    def _slow(self, seconds: float) -> None:
        self._slow_until = max(self._slow_until, anyio.current_time() + seconds)

    def _malformed(self, count: float) -> None:
        contract = self.sim.contracts[0].id
        for c in self._market_conns():
            for frame in malformed_frames(int(count), contract):
                self._enqueue(c, frame)

    def _oversize(self, size: float) -> None:
        frame = oversize_frame(int(size), self.sim.contracts[0].id, self.sim)
        for c in self._market_conns():
            self._enqueue(c, frame)

    def _expire(self, _: float) -> None:
        self.tokens.expire_all()
        for c in list(self.connections):
            self.close(c, "Unauthorized: the access token expired", allow_reconnect=True)

    def _revoke(self, _: float) -> None:
        self.tokens.revoke_all()
        for c in list(self.connections):
            self.close(c, "Unauthorized: the access token was revoked")

    def _logout(self, _: float) -> None:
        self.tokens.revoke_all()
        for c in list(self.connections):
            if c.session.open:
                self._enqueue(c, invocation("GatewayLogout"))
                c.logged_out = True

    def _rest429(self, count: float) -> None:
        self.rest.pending_429 += int(count)

    def _rest500(self, count: float) -> None:
        self.rest.pending_500 += int(count)

    def _burst(self, count: float) -> None:
        events = self.sim.advance(self.wall_time())
        self._deliver(events + self.sim.burst(int(count)))


_FAULTS: Final[dict[str, Callable[[GatewaySim, float], None]]] = {
    "drop": GatewaySim._drop,
    "stall": GatewaySim._stall,
    "malformed": GatewaySim._malformed,
    "oversize": GatewaySim._oversize,
    "expire": GatewaySim._expire,
    "revoke": GatewaySim._revoke,
    "logout": GatewaySim._logout,
    "rest429": GatewaySim._rest429,
    "rest500": GatewaySim._rest500,
    "slow": GatewaySim._slow,
    "burst": GatewaySim._burst,
}
