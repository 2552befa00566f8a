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

Each hub connection is a ``hubconn.HubConn``: a reader and a writer around a
bounded outbox, in a task group of its own.

Invariant: a connection is in ``connections`` exactly while its reader runs; its
``scope`` cancelled means the socket is abandoned without a close handshake.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from typing import Final
from urllib.parse import parse_qs

import anyio
import anyio.abc
import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    Request,
)
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from protocols import signalr
from protocols.hubs import HubName
from pxnode.sim.account import DemoAccounts, UserChange, mark
from pxnode.sim.config import SimConfig
from pxnode.sim.contracts import contracts_for
from pxnode.sim.faults import Fault, FaultSchedule, parse_faults
from pxnode.sim.history import SyntheticHistory
from pxnode.sim.httpio import next_event, respond
from pxnode.sim.hubconn import CHUNK, OUTBOX, HubConn, Outgoing, Pace
from pxnode.sim.hubs import (
    HubSession,
    invocation,
    malformed_frames,
    oversize_frame,
    route,
    user_route,
)
from pxnode.sim.market import MarketEvent, MarketSim
from pxnode.sim.rest import MAX_BODY, RestHandler, bearer, unauthorized
from pxnode.sim.tokens import Claims, TokenAuthority

_MAX_HEAD: Final = 64 * 1024


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
        self.connections: set[HubConn] = set()
        self.counters: Counter[str] = Counter()
        self.port = 0
        self._t0 = 0.0
        self.pace = Pace()

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
            c = HubConn(session, ws, send, tg.cancel_scope, self.counters)
            self.connections.add(c)
            try:
                tg.start_soon(c.write, stream, receive, self.pace)
                await c.read(stream, leftover)
            finally:
                self.connections.discard(c)
                self.counters["bad_messages"] += session.bad_messages

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
        if not events or anyio.current_time() < self.pace.stalled_until:
            return
        by_session = {c.session: c for c in self.connections if not (c.closing or c.logged_out)}
        for session, frames in route(events, by_session):
            c = by_session[session]
            chunk: list[bytes] = []
            size = 0
            for frame in frames:
                if chunk and size + len(frame) > CHUNK:
                    c.enqueue(b"".join(chunk))
                    chunk, size = [], 0
                chunk.append(frame)
                size += len(frame)
            c.enqueue(b"".join(chunk))

    def _deliver_user(self, changes: list[UserChange]) -> None:
        if not changes or anyio.current_time() < self.pace.stalled_until:
            return
        by_session = {c.session: c for c in self.connections if not (c.closing or c.logged_out)}
        for session, frames in user_route(changes, by_session):
            by_session[session].enqueue(b"".join(frames))

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
                        c.close("Server timeout elapsed without receiving a message.")
                elif (
                    c.session.open
                    and now - c.last_write >= config.ping_interval
                    and now >= self.pace.stalled_until
                ):
                    c.enqueue(c.session.codec.send(signalr.Ping()))
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

    def _market_conns(self) -> list[HubConn]:
        return [c for c in self.connections if c.session.hub == "market" and c.session.open]

    def _drop(self, _: float) -> None:
        for c in list(self.connections):
            c.scope.cancel()

    def _stall(self, seconds: float) -> None:
        self.pace.stall(seconds)

    def _slow(self, seconds: float) -> None:
        self.pace.slow(seconds)

    def _malformed(self, count: float) -> None:
        contract = self.sim.contracts[0].id
        for c in self._market_conns():
            for frame in malformed_frames(int(count), contract):
                c.enqueue(frame)

    def _oversize(self, size: float) -> None:
        frame = oversize_frame(int(size), self.sim.contracts[0].id, self.sim)
        for c in self._market_conns():
            c.enqueue(frame)

    def _expire(self, _: float) -> None:
        self.tokens.expire_all()
        for c in list(self.connections):
            c.close("Unauthorized: the access token expired", allow_reconnect=True)

    def _revoke(self, _: float) -> None:
        self.tokens.revoke_all()
        for c in list(self.connections):
            c.close("Unauthorized: the access token was revoked")

    def _logout(self, _: float) -> None:
        self.tokens.revoke_all()
        for c in list(self.connections):
            if c.session.open:
                c.enqueue(invocation("GatewayLogout"))
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
