"""The connection actor in virtual time.

Its peer is either a scripted hub server (wsproto's server role plus the
SignalR codec's) or the simulated gateway, both over in-memory byte streams
handed out by the ``connect`` seam, so reconnects, freezes and timeouts run
under ``MockClock(autojump_threshold=0)`` in milliseconds. A last test runs the
actor against the sim on a real loopback socket.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import msgspec
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.events import Ping as WsPing

from actors.connection import (
    BadCommand,
    ConnectionActor,
    ConnectionLost,
    HubConfig,
    SubscriptionBook,
)
from protocols.errors import ConfigError
from protocols.hubs import (
    Connected,
    Disconnected,
    HeartbeatMeasured,
    ReconnectRequested,
    SubscribeAccount,
    SubscribeContract,
    UnsubscribeAccount,
    UnsubscribeContract,
)
from protocols.messages import (
    AuthFailureReported,
    BreakerTransitioned,
    CountersReported,
    GetToken,
    HubMessageReceived,
    HubMessagesReceived,
    RefreshToken,
    Stop,
    TokenIssued,
)
from protocols.secrets import Secret
from protocols.signalr import (
    Close,
    Completion,
    HandshakeRequest,
    HandshakeResponse,
    Invocation,
    Ping,
    Role,
    Sentinel,
    SignalRConnection,
)
from pxnode.sim import Fault, GatewaySim, SimConfig, mock_transport, running
from pxnode.testing import FakeContext, Pipe, RecordingRef, socket_pair
from supervisors.breaker import BreakerPolicy
from supervisors.mailbox import Mailbox, MailboxSpec, OverflowPolicy
from supervisors.ref import MailboxRef
from supervisors.registry import Registry
from supervisors.supervisor import ChildSpec, Supervisor

EPOCH = 1_764_000_000.0
TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LW9uZQ.SIGNATURE-ONE"
NEW_TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXR3bw.SIGNATURE-TWO"
MNQ, MES = "CON.F.US.MNQ.Z25", "CON.F.US.MES.Z25"


# ------------------------------------------------------------------ the wire


def reasons(rig: Any) -> list[str]:
    """Why the hub said it was gone, in order (``silent_since`` is judged where it matters)."""
    return [m.reason for m in rig.told(Disconnected)]


class Network:
    """The ``connect`` seam: every dial makes a socket pair; the server end is ``accepted``."""

    def __init__(self) -> None:
        self._send, self.accepted = anyio.create_memory_object_stream[Pipe](16)
        self.dials: list[tuple[str, int]] = []

    async def connect(self, host: str, port: int) -> anyio.abc.ByteStream:
        self.dials.append((host, port))
        client, server = socket_pair()
        await self._send.send(server)
        return client

    def receive_nowait_all(self) -> list[Pipe]:
        """Server ends dialled but never accepted by a test."""
        out = []
        with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            while True:
                out.append(self.accepted.receive_nowait())
        return out

    def close(self) -> None:
        self._send.close()
        self.accepted.close()


class Peer:
    """A scripted hub server for one socket: wsproto's server role plus the codec's."""

    def __init__(self, stream: Pipe) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self.codec = SignalRConnection(Role.SERVER)
        self.messages: deque[Any] = deque()
        self.seen: list[Any] = []  # every SignalR message from the client, in order
        self.closes: list[CloseConnection] = []
        self.target = ""
        self.answer_pings = True

    async def pump(self) -> bool:
        """Read one chunk from the client; False at EOF."""
        try:
            data = await self.stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return False
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, Request):
                self.target = event.target
            elif isinstance(event, TextMessage):
                self.codec.receive_data(event.data.encode())
            elif isinstance(event, WsPing):
                if self.answer_pings:
                    await self._reply(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closes.append(event)
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    await self._reply(self.ws.send(event.response()))
        while not isinstance(message := self.codec.next_event(), Sentinel):
            self.messages.append(message)
            self.seen.append(message)
        return True

    async def _reply(self, data: bytes) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self.stream.send(data)

    async def accept(self, *, status: int | None = None, handshake: bool = True) -> None:
        while not self.target:
            assert await self.pump()
        if status is not None:
            await self.stream.send(self.ws.send(RejectConnection(status_code=status)))
            await self.stream.aclose()
            return
        await self.stream.send(self.ws.send(AcceptConnection()))
        if handshake:
            assert isinstance(await self.next_message(), HandshakeRequest)
            await self.send(HandshakeResponse())

    async def next_message(self) -> Any:
        """The next SignalR message but Ping; None at EOF."""
        while True:
            while self.messages:
                message = self.messages.popleft()
                if not isinstance(message, Ping):
                    return message
            if not await self.pump():
                return None

    async def calls(self, n: int) -> list[tuple[str, list[Any]]]:
        """The next ``n`` invocations as (target, arguments)."""
        out: list[tuple[str, list[Any]]] = []
        while len(out) < n:
            message = await self.next_message()
            assert isinstance(message, Invocation), message
            out.append((message.target, msgspec.json.decode(message.arguments)))
        return out

    async def drain(self) -> None:
        """Read until EOF (keeps the client's pings flowing without answering anything)."""
        while await self.pump():
            pass

    async def send(self, event: Any) -> None:
        await self.send_text(self.codec.send(event).decode())

    async def send_text(self, text: str) -> None:
        await self.stream.send(self.ws.send(TextMessage(data=text)))

    async def trade(self, price: float, contract: str = MNQ) -> None:
        item = {"symbolId": "F.US.MNQ", "price": price, "timestamp": "t", "type": 0, "volume": 1}
        await self.send(Invocation("GatewayTrade", [contract, [item]]))

    async def expect_close(self) -> None:
        """Read until the client's websocket close (answered by ``pump``)."""
        while not self.closes:
            assert await self.pump()


# ----------------------------------------------------------------- the actor's world


class ValidationRef(RecordingRef):
    """Records each forwarded frame, unpacking the per-read ``HubMessagesReceived``."""

    def tell_nowait(self, msg: Any) -> None:
        self.told.extend(msg.messages if isinstance(msg, HubMessagesReceived) else [msg])

    async def tell(self, msg: Any) -> None:
        self.tell_nowait(msg)
        await anyio.lowlevel.checkpoint()


class AuthRef(RecordingRef):
    """Answers ``GetToken`` with ``token`` (or ``failure``), like the auth actor."""

    def __init__(self, token: str) -> None:
        super().__init__("auth")
        self.token = token
        self.failure: str | None = None

    async def ask(self, msg: Any, timeout: float) -> Any:
        assert isinstance(msg, GetToken)
        await anyio.lowlevel.checkpoint()
        if self.failure is not None:
            return AuthFailureReported(self.failure)
        return TokenIssued(token=Secret(self.token), expires_at=EPOCH + 3600)


class Rig:
    """One hub's world: network, refs, inbox, book; runs incarnations of the actor."""

    def __init__(self, tg: anyio.abc.TaskGroup, hub: str = "market", **config: Any) -> None:
        self.tg = tg
        self.net = Network()
        self.book = SubscriptionBook(hub)  # type: ignore[arg-type]
        config.setdefault("skip_negotiation", True)
        self.config = HubConfig(hub=hub, url=f"http://gateway.test/hubs/{hub}", **config)  # type: ignore[arg-type]
        self.auth = AuthRef(TOKEN)
        self.validation: Any = ValidationRef("validation")
        self.raw, self.events, self.stats = (
            RecordingRef(n) for n in ("topic.raw", "topic.events", "stats")
        )
        self.ctx = FakeContext(
            "connection", [self.auth, self.validation, self.raw, self.events, self.stats]
        )
        self.inbox: Mailbox[Any] = Mailbox(f"connection.{hub}", MailboxSpec(64))
        self.error: BaseException | None = None
        self.done = anyio.Event()
        self.peers: list[Peer] = []

    def actor(self, **kwargs: Any) -> ConnectionActor:
        return ConnectionActor(self.config, self.book, connect=self.net.connect, **kwargs)

    def start(self, actor: ConnectionActor | None = None) -> None:
        self.error, self.done = None, anyio.Event()
        self.tg.start_soon(self._run, actor or self.actor())

    async def _run(self, actor: ConnectionActor) -> None:
        try:
            await actor.run(self.inbox, self.ctx)
        except ConnectionLost as exc:
            self.error = exc
        finally:
            self.done.set()

    async def peer(self, **accept: Any) -> Peer:
        peer = Peer(await self.net.accepted.receive())
        self.peers.append(peer)
        await peer.accept(**accept)
        return peer

    async def ended(self) -> BaseException | None:
        await self.done.wait()
        return self.error

    def tell(self, msg: Any) -> None:
        self.inbox.send_nowait(msg)

    def told(self, kind: type) -> list[Any]:
        return [m for m in self.events.told if isinstance(m, kind)]

    def trades(self) -> list[float]:
        """Prices of the well-formed GatewayTrade frames forwarded (sim faults send others)."""
        prices = []
        for m in self.validation.told:
            with contextlib.suppress(LookupError, TypeError, ValueError):
                if m.target == "GatewayTrade":
                    prices.append(float(msgspec.json.decode(m.arguments)[1][0]["price"]))
        return prices

    def counters(self) -> dict[str, int]:
        reports = [m for m in self.stats.told if isinstance(m, CountersReported)]
        assert reports and reports[-1].source == f"connection_{self.config.hub}"
        return reports[-1].counters

    def close(self) -> None:
        """Synchronous, so that it runs to the end inside a cancelled scope."""
        for peer in self.peers:
            peer.stream.close()
        for stream in self.net.receive_nowait_all():
            stream.close()
        self.net.close()
        self.inbox.dispose()


@asynccontextmanager
async def rigged(hub: str = "market", **config: Any) -> AsyncIterator[Rig]:
    async with anyio.create_task_group() as tg:
        rig = Rig(tg, hub, **config)
        try:
            yield rig
        finally:
            tg.cancel_scope.cancel()
            rig.close()


async def until(predicate: Callable[[], object], limit: float = 10.0) -> None:
    """Poll: the actor's effects land in plain fakes, which have no event to wait on."""
    with anyio.fail_after(limit):
        while True:
            if predicate():
                return
            await anyio.sleep(0.01)


def negotiation(
    seen: list[httpx.Request], status: int = 200, body: object = None
) -> httpx.MockTransport:
    answer = body or {
        "connectionId": "cid-1",
        "connectionToken": "ctok-1",
        "negotiateVersion": 1,
        "availableTransports": [{"transport": "WebSockets", "transferFormats": ["Text"]}],
    }

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        content = answer if isinstance(answer, bytes) else msgspec.json.encode(answer)
        return httpx.Response(status, content=content)

    return httpx.MockTransport(respond)


# ---------------------------------------------------------------- happy path


@pytest.mark.trio
async def test_connects_subscribes_forwards_and_stops_cleanly(autojump_clock: Any) -> None:
    async with rigged() as rig:
        rig.book.apply(SubscribeContract(MNQ))
        rig.start()
        peer = await rig.peer()
        assert f"access_token={TOKEN}" in peer.target
        assert rig.net.dials == [("gateway.test", 80)]
        assert await peer.calls(3) == [
            ("SubscribeContractQuotes", [MNQ]),
            ("SubscribeContractTrades", [MNQ]),
            ("SubscribeContractMarketDepth", [MNQ]),
        ]
        await until(lambda: rig.told(Connected))
        assert rig.told(Connected) == [Connected("market", None)]
        assert rig.ctx.healthy == 0  # subscribed, but nothing has arrived yet

        await anyio.sleep(5)
        sent_at = EPOCH + anyio.current_time()
        await peer.trade(100.25)
        await until(lambda: rig.validation.told)
        (msg,) = rig.validation.told
        assert isinstance(msg, HubMessageReceived)
        assert (msg.hub, msg.target) == ("market", "GatewayTrade")
        assert msgspec.json.decode(msg.arguments)[0] == MNQ
        assert sent_at <= msg.received_at < sent_at + 0.1
        assert rig.raw.told == [msg]
        assert rig.ctx.healthy == 1

        await peer.trade(100.5)
        await until(lambda: len(rig.validation.told) == 2)
        assert rig.ctx.healthy == 1  # once per incarnation

        rig.tell(Stop())
        await peer.expect_close()
        assert await rig.ended() is None
        assert any(isinstance(m, Close) for m in peer.seen)
        assert reasons(rig) == ["stopped"]
        assert rig.counters()["invocations.GatewayTrade"] == 2


@pytest.mark.anyio
async def test_runs_on_both_backends(anyio_backend: str) -> None:
    async with rigged() as rig:
        rig.book.apply(SubscribeContract(MNQ, ("trades",)))
        rig.start()
        first = await rig.peer()
        await first.calls(1)
        await first.trade(1.0)
        await until(lambda: rig.trades() == [1.0], limit=2)
        rig.auth.token = NEW_TOKEN
        rig.tell(TokenIssued(token=Secret(NEW_TOKEN), expires_at=EPOCH))
        await first.expect_close()
        second = await rig.peer()
        await second.calls(1)
        await second.trade(2.0)
        await until(lambda: rig.trades() == [1.0, 2.0], limit=2)
        rig.tell(Stop())
        await second.expect_close()
        assert await rig.ended() is None


@pytest.mark.trio
async def test_end_of_inbox_closes_like_stop(autojump_clock: Any) -> None:
    async with rigged() as rig:
        rig.start()
        peer = await rig.peer()
        rig.inbox.close()
        await peer.expect_close()
        assert await rig.ended() is None


@pytest.mark.trio
async def test_negotiates_with_bearer_and_uses_the_connection_token(autojump_clock: Any) -> None:
    seen: list[httpx.Request] = []
    async with rigged(skip_negotiation=False) as rig:
        rig.start(rig.actor(http=negotiation(seen)))
        peer = await rig.peer()
        (request,) = seen
        assert request.method == "POST"
        assert str(request.url) == "http://gateway.test/hubs/market/negotiate?negotiateVersion=1"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert "id=ctok-1" in peer.target and f"access_token={TOKEN}" in peer.target
        await until(lambda: rig.told(Connected))
        assert rig.told(Connected) == [Connected("market", "cid-1")]
        rig.tell(Stop())
        await peer.expect_close()
        assert await rig.ended() is None


@pytest.mark.trio
@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, None, "refused: HTTP 401"),
        (500, None, "refused: HTTP 500"),
        (200, b"{not json", "malformed answer"),
        (200, {"error": "hub is full"}, "refused: hub is full"),
        (200, {"availableTransports": [{"transport": "LongPolling"}]}, "no WebSockets"),
    ],
)
async def test_negotiation_failures_raise(
    autojump_clock: Any, status: int, body: object, expected: str
) -> None:
    async with rigged(skip_negotiation=False) as rig:
        rig.start(rig.actor(http=negotiation([], status, body)))
        error = await rig.ended()
        assert isinstance(error, ConnectionLost) and expected in str(error)
        assert rig.net.dials == []
        assert reasons(rig) == [str(error)]
        assert (RefreshToken() in rig.auth.told) == (status == 401)


@pytest.mark.trio
async def test_user_hub_subscribes_accounts_once(autojump_clock: Any) -> None:
    async with rigged("user") as rig:
        rig.book.apply(SubscribeAccount(7))
        rig.start()
        peer = await rig.peer()
        assert await peer.calls(4) == [
            ("SubscribeAccounts", []),
            ("SubscribeOrders", [7]),
            ("SubscribePositions", [7]),
            ("SubscribeTrades", [7]),
        ]
        rig.tell(SubscribeAccount(8, ("accounts", "orders")))
        assert await peer.calls(1) == [("SubscribeOrders", [8])]
        rig.tell(UnsubscribeAccount(7, ("accounts", "trades")))
        assert await peer.calls(1) == [("UnsubscribeTrades", [7])]  # 8 still wants accounts
        await peer.send(Invocation("GatewayUserOrder", [{"id": 1}]))
        await until(lambda: rig.validation.told)
        assert rig.validation.told[0].hub == "user"
        assert rig.ctx.healthy == 1
        await anyio.sleep(2)
        assert rig.counters()["invocations.GatewayUserOrder"] == 1


@pytest.mark.trio
async def test_an_empty_book_is_healthy_on_any_server_message(autojump_clock: Any) -> None:
    async with rigged() as rig:
        rig.start()
        peer = await rig.peer()
        await anyio.sleep(1)
        assert rig.ctx.healthy == 0
        await peer.send(Ping())
        await until(lambda: rig.ctx.healthy)


@pytest.mark.trio
async def test_server_pings_alone_never_make_a_subscribed_hub_healthy(autojump_clock: Any) -> None:
    async with rigged() as rig:
        rig.book.apply(SubscribeContract(MNQ, ("trades",)))
        rig.start()
        peer = await rig.peer()
        await peer.calls(1)
        for _ in range(10):
            await peer.send(Ping())
            await peer.send(Completion("1"))
            await anyio.sleep(10)
        assert rig.ctx.healthy == 0 and rig.error is None
        await peer.trade(1.0)
        await until(lambda: rig.ctx.healthy)


@pytest.mark.trio
async def test_a_user_hub_is_healthy_once_it_accepted_a_call(autojump_clock: Any) -> None:
    # The user hub sends events only when the account changes (the real gateway nothing
    # on subscribe), so an accepted subscription is its proof of life.
    async with rigged("user") as rig:
        account = rig.ctx.refs["account"] = RecordingRef("account")
        rig.book.apply(SubscribeAccount(7, ("orders",)))
        rig.start()
        peer = await rig.peer()
        await peer.calls(1)
        await until(lambda: account.told == [Connected("user")])  # its REST sync follows
        await peer.send(Completion("99"))  # not one of ours
        await peer.send(Completion("1", error="no such account"))
        await anyio.sleep(10)
        assert rig.ctx.healthy == 0
        rig.tell(SubscribeAccount(7, ("positions",)))
        await peer.calls(1)
        await peer.send(Completion("2"))
        await until(lambda: rig.ctx.healthy)


# ------------------------------------------------- subscriptions across sessions


@pytest.mark.trio
async def test_commands_update_the_book_and_a_new_incarnation_resubscribes(
    autojump_clock: Any,
) -> None:
    async with rigged() as rig:
        rig.book.apply(SubscribeContract(MNQ, ("trades",)))
        rig.start()
        peer = await rig.peer()
        assert await peer.calls(1) == [("SubscribeContractTrades", [MNQ])]
        rig.tell(SubscribeContract(MES))
        assert len(await peer.calls(3)) == 3
        rig.tell(SubscribeContract(MNQ, ("trades", "quotes")))  # trades: already there
        assert await peer.calls(1) == [("SubscribeContractQuotes", [MNQ])]
        rig.tell(UnsubscribeContract(MES, ("depth",)))
        assert await peer.calls(1) == [("UnsubscribeContractMarketDepth", [MES])]

        await peer.stream.aclose()  # the gateway goes away
        error = await rig.ended()
        assert isinstance(error, ConnectionLost) and "EOF" in str(error)

        rig.start()  # what the supervisor does: a new actor, the same book
        peer = await rig.peer()
        assert await peer.calls(4) == [
            ("SubscribeContractTrades", [MNQ]),
            ("SubscribeContractQuotes", [MES]),
            ("SubscribeContractTrades", [MES]),
            ("SubscribeContractQuotes", [MNQ]),
        ]


@pytest.mark.trio
async def test_token_refresh_reconnects_with_the_same_subscriptions(autojump_clock: Any) -> None:
    async with rigged() as rig:
        rig.book.apply(SubscribeContract(MNQ, ("trades", "depth")))
        rig.start()
        first = await rig.peer()
        subscriptions = await first.calls(2)
        await first.trade(1.0)
        await first.trade(2.0)
        await until(lambda: len(rig.validation.told) == 2)

        rig.tell(TokenIssued(token=Secret(TOKEN), expires_at=EPOCH))  # ours: nothing to do
        rig.auth.token = NEW_TOKEN
        rig.tell(TokenIssued(token=Secret(NEW_TOKEN), expires_at=EPOCH + 7200))
        await first.expect_close()
        assert any(isinstance(m, Close) for m in first.seen)

        second = await rig.peer()
        assert f"access_token={NEW_TOKEN}" in second.target
        assert await second.calls(2) == subscriptions
        await second.trade(3.0)
        await until(lambda: len(rig.validation.told) == 3)
        assert rig.trades() == [1.0, 2.0, 3.0]  # nothing lost, nothing twice
        assert len(rig.peers) == 2
        assert reasons(rig) == ["token refreshed"]
        assert len(rig.told(Connected)) == 2
        await anyio.sleep(2)
        assert rig.counters()["reconnects"] == 1
        assert rig.ctx.healthy == 1
        assert rig.error is None


@pytest.mark.trio
async def test_reconnect_requested_by_health(autojump_clock: Any) -> None:
    async with rigged() as rig:
        rig.book.apply(SubscribeContract(MNQ, ("quotes",)))
        rig.start()
        first = await rig.peer()
        await first.calls(1)
        rig.tell(ReconnectRequested("user", "not ours"))
        rig.tell(ReconnectRequested("market", "stale feed: no data for 31 s"))
        await first.expect_close()
        second = await rig.peer()
        assert await second.calls(1) == [("SubscribeContractQuotes", [MNQ])]
        assert reasons(rig) == ["reconnect requested: stale feed: no data for 31 s"]
        await anyio.sleep(2)
        assert rig.counters()["commands_rejected.unknown"] == 1


# ------------------------------------------------- the inbox while connecting


class GatedAuth(AuthRef):
    """Holds every token ask until ``gate`` is set; counts asks that were cancelled."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.gate = anyio.Event()
        self.asks = self.abandoned = 0

    async def ask(self, msg: Any, timeout: float) -> Any:
        self.asks += 1
        try:
            await self.gate.wait()
        except anyio.get_cancelled_exc_class():
            self.abandoned += 1
            raise
        return await super().ask(msg, timeout)


def _hanging_negotiation(abandoned: list[str]) -> httpx.MockTransport:
    async def respond(request: httpx.Request) -> httpx.Response:
        try:
            await anyio.sleep_forever()
        finally:
            abandoned.append("negotiate")
        raise AssertionError

    return httpx.MockTransport(respond)


@pytest.mark.trio
@pytest.mark.parametrize("ending", ["stop", "end"])
@pytest.mark.parametrize("phase", ["token", "negotiate", "dial", "handshake"])
async def test_stop_while_connecting_returns_at_once(
    autojump_clock: Any, caplog: Any, phase: str, ending: str
) -> None:
    """Shutdown must not wait out a connect: the supervisor's grace would be spent in full."""
    caplog.set_level(logging.DEBUG)
    abandoned: list[str] = []
    async with rigged(skip_negotiation=phase != "negotiate") as rig:
        auth = GatedAuth(TOKEN)
        rig.ctx.refs["auth"] = auth
        actor = rig.actor(http=_hanging_negotiation(abandoned))
        if phase == "dial":

            async def never(host: str, port: int) -> anyio.abc.ByteStream:
                try:
                    await anyio.sleep_forever()
                finally:
                    abandoned.append("dial")
                raise AssertionError

            actor = ConnectionActor(rig.config, rig.book, connect=never)
        rig.start(actor)
        await until(lambda: auth.asks)
        if phase != "token":
            auth.gate.set()
        if phase == "handshake":
            peer = await rig.peer(handshake=False)
            assert isinstance(await peer.next_message(), HandshakeRequest)
        else:
            await anyio.sleep(1)  # well inside every timeout
        t0 = anyio.current_time()
        if ending == "stop":
            rig.tell(Stop())
        else:
            rig.inbox.close()
        assert await rig.ended() is None
        assert anyio.current_time() - t0 < 0.01
        assert not rig.told(Connected) and not rig.told(Disconnected)
        if phase == "token":
            assert auth.abandoned == 1
        elif phase == "handshake":
            await peer.drain()  # EOF: the half-open socket was closed
        else:
            assert abandoned == [phase]
        assert rig.net.dials == ([("gateway.test", 80)] if phase == "handshake" else [])
        assert TOKEN not in caplog.text and "stopped while connecting" in caplog.text


@pytest.mark.trio
async def test_a_stop_as_the_handshake_completes_still_closes(autojump_clock: Any) -> None:
    async with rigged() as rig:
        rig.start()
        peer = await rig.peer(handshake=False)
        assert isinstance(await peer.next_message(), HandshakeRequest)
        await peer.send(HandshakeResponse())
        rig.tell(Stop())  # the link opens and the Stop is read in the same instant
        assert await rig.ended() is None
        await peer.drain()
        assert [c.code for c in peer.closes] == [1000]
        assert not rig.told(Connected)


@pytest.mark.trio
async def test_commands_sent_while_connecting_are_subscribed_once_connected(
    autojump_clock: Any,
) -> None:
    async with rigged() as rig:
        auth = GatedAuth(TOKEN)
        rig.ctx.refs["auth"] = auth
        rig.start()
        await until(lambda: auth.asks)
        rig.tell(SubscribeContract(MNQ, ("trades",)))  # during the token ask
        rig.tell(SubscribeContract(""))  # bad: counted, changes nothing
        rig.tell("hello")
        rig.tell(ReconnectRequested("market", "stale"))  # the connect in progress is that
        await anyio.sleep(1)
        auth.gate.set()
        peer = await rig.peer(handshake=False)
        assert isinstance(await peer.next_message(), HandshakeRequest)
        rig.tell(SubscribeContract(MES, ("quotes",)))  # during the handshake
        rig.tell(UnsubscribeContract(MNQ, ("trades",)))
        rig.tell(SubscribeContract(MNQ, ("depth",)))
        await anyio.sleep(1)
        await peer.send(HandshakeResponse())
        assert await peer.calls(2) == [
            ("SubscribeContractQuotes", [MES]),
            ("SubscribeContractMarketDepth", [MNQ]),
        ]
        await until(lambda: rig.told(Connected))
        rig.tell(Stop())
        await peer.expect_close()
        assert await rig.ended() is None
        assert len([m for m in peer.seen if isinstance(m, Invocation)]) == 2
        assert len(rig.peers) == 1  # the reconnect request did not make a second socket
        counters = rig.counters()
        assert counters["commands_rejected.contract"] == 1
        assert counters["commands_rejected.unknown"] == 1


@pytest.mark.trio
async def test_a_token_issued_while_connecting_is_judged_once_connected(
    autojump_clock: Any,
) -> None:
    async with rigged() as rig:
        rig.start()
        first = await rig.peer(handshake=False)
        assert isinstance(await first.next_message(), HandshakeRequest)
        rig.tell(TokenIssued(token=Secret(TOKEN), expires_at=EPOCH))  # ours: nothing to do
        await anyio.sleep(1)
        await first.send(HandshakeResponse())
        await until(lambda: rig.told(Connected))
        await anyio.sleep(1)
        assert len(rig.peers) == 1

        rig.tell(ReconnectRequested("market", "again"))
        await first.expect_close()
        second = await rig.peer(handshake=False)
        assert isinstance(await second.next_message(), HandshakeRequest)
        rig.auth.token = NEW_TOKEN
        rig.tell(TokenIssued(token=Secret("stale"), expires_at=EPOCH))
        rig.tell(TokenIssued(token=Secret(NEW_TOKEN), expires_at=EPOCH))  # the newest wins
        await second.send(HandshakeResponse())
        await second.expect_close()  # connected with the old token: straight to the new one
        third = await rig.peer()
        assert f"access_token={NEW_TOKEN}" in third.target
        await until(lambda: len(rig.told(Connected)) == 3)
        assert reasons(rig)[-1] == "token refreshed"
        assert rig.error is None


# ------------------------------------------------------------------ failures


@pytest.mark.trio
async def test_a_silent_server_is_detected_as_frozen(autojump_clock: Any) -> None:
    async with rigged(server_timeout=30.0, keepalive_interval=15.0) as rig:
        rig.book.apply(SubscribeContract(MNQ))
        rig.start()
        peer = await rig.peer()
        await peer.trade(1.0)
        t0 = anyio.current_time()
        rig.tg.start_soon(peer.drain)  # TCP is fine, the gateway just says nothing
        error = await rig.ended()
        assert isinstance(error, ConnectionLost)
        assert "no message from the server in 30 s" in str(error)
        assert 30.0 <= anyio.current_time() - t0 < 30.5
        assert any(isinstance(m, Ping) for m in peer.seen)  # our keepalive kept going
        (gone,) = rig.told(Disconnected)
        assert gone.reason == str(error)
        # the gap began with the silence, 30 s before it was noticed: a back-fill reaches there
        assert gone.silent_since is not None and abs(gone.silent_since - (EPOCH + t0)) < 0.5


@pytest.mark.trio
async def test_a_gateway_logout_asks_auth_for_a_login_and_is_not_forwarded(
    autojump_clock: Any,
) -> None:
    async with rigged() as rig:
        rig.start()
        peer = await rig.peer()
        await peer.send(Invocation("GatewayLogout", []))
        await peer.trade(1.0)
        await until(lambda: len(rig.validation.told) == 1)
        assert rig.auth.told == [RefreshToken(logged_out=True)]  # it backs off when repeated
        assert [m.target for m in rig.validation.told] == ["GatewayTrade"]


@pytest.mark.trio
async def test_server_pings_keep_a_quiet_connection_alive(autojump_clock: Any) -> None:
    async with rigged(server_timeout=30.0) as rig:
        rig.start()
        peer = await rig.peer()
        rig.tg.start_soon(peer.drain)
        for _ in range(10):
            await anyio.sleep(20)
            await peer.send(Ping())
        assert rig.error is None and not rig.done.is_set()


async def _invalid_utf8(peer: Peer) -> None:
    await peer.stream.send(b"\x81\x02\xff\xfe")  # a text frame that is not UTF-8


@pytest.mark.trio
@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (lambda peer: peer.stream.aclose(), "the server closed the connection (EOF)"),
        (
            lambda peer: peer.stream.send(peer.ws.send(CloseConnection(1011, "boom"))),
            "the server closed the websocket (code 1011): boom",
        ),
        (
            lambda peer: peer.send(Close(error="going away")),
            "the server closed the hub: going away",
        ),
        (_invalid_utf8, "websocket protocol error (code 1007)"),
    ],
    ids=["eof", "close-1011", "signalr-close", "invalid-utf8"],
)
async def test_the_ways_a_socket_ends_raise_connection_lost(
    autojump_clock: Any, fault: Callable[[Peer], Any], expected: str
) -> None:
    async with rigged() as rig:
        rig.book.apply(SubscribeContract(MNQ, ("trades",)))
        rig.start()
        peer = await rig.peer()
        await peer.calls(1)
        await peer.trade(1.0)
        await fault(peer)
        error = await rig.ended()
        assert isinstance(error, ConnectionLost) and expected in str(error), error
        assert rig.trades() == [1.0]
        assert reasons(rig) == [str(error)]
        assert rig.counters()["failures"] == 1


@pytest.mark.trio
async def test_an_empty_text_frame_is_nothing_not_the_end_of_the_stream(
    autojump_clock: Any,
) -> None:
    """It once reached the codec as b"" (its EOF): the hub went deaf, and the next
    heartbeat's send raised out of the actor."""
    async with rigged(server_timeout=30.0, keepalive_interval=15.0) as rig:
        rig.book.apply(SubscribeContract(MNQ, ("trades",)))
        rig.start()
        peer = await rig.peer()
        await peer.calls(1)
        await peer.trade(1.0)
        await peer.send_text("")
        await peer.trade(2.0)
        await until(lambda: rig.trades() == [1.0, 2.0])
        rig.tg.start_soon(peer.drain)
        for _ in range(4):  # heartbeats go out, and the server's pings keep the hub alive
            await anyio.sleep(20)
            await peer.send(Ping())
        assert rig.error is None and not rig.done.is_set()
        assert sum(isinstance(m, Ping) for m in peer.seen) >= 4


@pytest.mark.trio
@pytest.mark.parametrize("run", range(12))  # trio shuffles ready tasks: each order, likely
@pytest.mark.parametrize("command", [Stop(), SubscribeContract(MNQ)], ids=["stop", "subscribe"])
async def test_a_command_racing_the_servers_close_sends_nothing_on_a_closed_hub(
    autojump_clock: Any, run: int, command: Any
) -> None:
    """The server's Close closes the codec; a command already taken from the inbox
    once sent on it anyway (ProtocolError out of the actor, about every other run)."""
    async with rigged() as rig:
        rig.start()
        peer = await rig.peer()
        rig.tg.start_soon(peer.drain)
        await anyio.sleep(1)
        await peer.send(Close(error="bye"))
        rig.tell(command)
        error = await rig.ended()
        assert error is None or isinstance(error, ConnectionLost), repr(error)


@pytest.mark.trio
async def test_a_close_from_the_server_is_answered(autojump_clock: Any) -> None:
    async with rigged() as rig:
        rig.start()
        peer = await rig.peer()
        await peer.stream.send(peer.ws.send(CloseConnection(1011)))
        assert isinstance(await rig.ended(), ConnectionLost)
        await peer.drain()
        assert peer.ws.state is ConnectionState.CLOSED  # our close reply arrived


@pytest.mark.trio
@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_refused_upgrade_raises_and_401_asks_auth_to_refresh(
    autojump_clock: Any, status: int
) -> None:
    async with rigged() as rig:
        rig.start()
        await rig.peer(status=status)
        error = await rig.ended()
        assert isinstance(error, ConnectionLost) and error.status == status
        assert f"refused: HTTP {status}" in str(error)
        assert (rig.auth.told == [RefreshToken()]) == (status == 401)


@pytest.mark.trio
async def test_a_refused_handshake_raises(autojump_clock: Any) -> None:
    async with rigged() as rig:
        rig.start()
        peer = await rig.peer(handshake=False)
        assert isinstance(await peer.next_message(), HandshakeRequest)
        await peer.send(HandshakeResponse(error="protocol 'json' is not enabled"))
        error = await rig.ended()
        assert isinstance(error, ConnectionLost)
        assert "handshake refused: protocol 'json' is not enabled" in str(error)


@pytest.mark.trio
async def test_a_malformed_handshake_answer_raises(autojump_clock: Any) -> None:
    async with rigged() as rig:
        rig.start()
        peer = await rig.peer(handshake=False)
        await peer.send_text('{"type":1,"target":"x","arguments":[]}\x1e')
        error = await rig.ended()
        assert isinstance(error, ConnectionLost) and "handshake failed" in str(error)


@pytest.mark.trio
async def test_handshake_and_connect_time_out(autojump_clock: Any) -> None:
    async with rigged(handshake_timeout=15.0, connect_timeout=10.0) as rig:
        rig.start()
        await rig.peer(handshake=False)  # the socket opens, the answer never comes
        t0 = anyio.current_time()
        error = await rig.ended()
        assert isinstance(error, ConnectionLost) and "handshake timed out" in str(error)
        assert 15.0 <= anyio.current_time() - t0 < 15.5

        async def never(host: str, port: int) -> anyio.abc.ByteStream:
            await anyio.sleep_forever()
            raise AssertionError

        rig.start(ConnectionActor(rig.config, rig.book, connect=never))
        error = await rig.ended()
        assert isinstance(error, ConnectionLost) and "connect timed out" in str(error)


@pytest.mark.trio
async def test_connect_refused_and_no_token(autojump_clock: Any) -> None:
    async with rigged() as rig:

        async def refuse(host: str, port: int) -> anyio.abc.ByteStream:
            raise ConnectionRefusedError(111, "Connection refused")

        rig.start(ConnectionActor(rig.config, rig.book, connect=refuse))
        error = await rig.ended()
        assert isinstance(error, ConnectionLost) and "connect failed" in str(error)

        rig.auth.failure = "POST /api/Auth/loginKey rejected: errorCode 3"
        rig.start()
        error = await rig.ended()
        assert isinstance(error, ConnectionLost) and "no token: POST" in str(error)


# ------------------------------------------------------------- bad input


@pytest.mark.trio
async def test_bad_messages_are_counted_and_the_connection_survives(autojump_clock: Any) -> None:
    async with rigged(max_message_size=2048) as rig:
        rig.start()
        peer = await rig.peer()
        await peer.send_text("[" + "1," * 3000 + "1]\x1e")  # one oversize message
        for _ in range(3):  # another, spread over three websocket messages
            await peer.send_text("x" * 1500)
        await peer.send_text("\x1e")
        await peer.send_text('{"type":1,"target":"GatewayTrade","arguments":[1,\x1e')
        await peer.send_text('{"type":1,"target":"GatewayTrade","arguments":{}}\x1e')
        await peer.send_text('{"type":99}\x1e')
        await peer.stream.send(peer.ws.send(BytesMessage(data=b"\x01\x02")))
        await peer.send(Invocation("SomethingNew", [1]))
        await peer.trade(5.0)
        await until(lambda: rig.trades() == [5.0])
        await anyio.sleep(2)
        counters = rig.counters()
        assert counters["bad.too_large"] == 2
        assert counters["bad.bad_json"] == 1
        assert counters["bad.bad_shape"] == 2
        assert counters["bad.binary"] == 1
        assert counters["invocations.other"] == 1
        assert rig.error is None and not rig.done.is_set()


@pytest.mark.trio
async def test_bad_commands_are_counted_and_change_nothing(autojump_clock: Any) -> None:
    async with rigged() as rig:
        rig.start()
        peer = await rig.peer()
        for bad in (
            SubscribeAccount(7),
            SubscribeContract(""),
            SubscribeContract("CON F"),
            SubscribeContract(5),  # type: ignore[arg-type]
            SubscribeContract("X" * 500),
            SubscribeContract(MNQ, ("candles",)),  # type: ignore[arg-type]
            SubscribeContract(MNQ, ()),
            SubscribeContract(MNQ, "trades"),  # type: ignore[arg-type]
            "hello",
            Request(host="x", target="/"),
        ):
            rig.tell(bad)
        rig.tell(SubscribeContract(MNQ, ("trades",)))
        assert await peer.calls(1) == [("SubscribeContractTrades", [MNQ])]
        await anyio.sleep(2)
        counters = rig.counters()
        assert counters["commands_rejected.wrong_hub"] == 1
        assert counters["commands_rejected.contract"] == 4
        assert counters["commands_rejected.kinds"] == 3
        assert counters["commands_rejected.unknown"] == 2
        assert len(rig.book) == 1


@pytest.mark.trio
async def test_a_failed_subscription_is_counted(autojump_clock: Any, caplog: Any) -> None:
    async with rigged() as rig:
        rig.book.apply(SubscribeContract("CON.F.US.NOPE.Z25", ("trades",)))
        rig.start()
        peer = await rig.peer()
        message = await peer.next_message()
        await peer.send(Completion(message.invocation_id, error="unknown contract"))
        await anyio.sleep(2)
        assert rig.counters()["calls_failed"] == 1
        assert "SubscribeContractTrades failed: unknown contract" in caplog.text


# ---------------------------------------------------------- flow and heartbeat


@pytest.mark.trio
async def test_backpressure_blocks_instead_of_dropping(autojump_clock: Any) -> None:
    async with rigged(server_timeout=30.0) as rig:
        validation: Mailbox[Any] = Mailbox("validation", MailboxSpec(1, OverflowPolicy.BLOCK))
        rig.ctx.refs["validation"] = MailboxRef(validation)
        rig.start()
        peer = await rig.peer()
        rig.tg.start_soon(peer.drain)
        for price in range(1, 6):
            await peer.trade(float(price))
        await anyio.sleep(100)  # validation is stuck far longer than server_timeout
        assert rig.error is None
        got = [await validation.receive() for _ in range(5)]
        assert [msgspec.json.decode(m.arguments)[1][0]["price"] for m in got] == [1, 2, 3, 4, 5]
        await anyio.sleep(20)
        await peer.trade(6.0)
        assert (await validation.receive()).target == "GatewayTrade"
        assert rig.error is None and not rig.done.is_set()
        validation.dispose()


@pytest.mark.trio
async def test_heartbeat_measures_the_round_trip(autojump_clock: Any) -> None:
    async with rigged(keepalive_interval=15.0, server_timeout=100.0) as rig:
        rig.start()
        peer = await rig.peer()
        rig.tg.start_soon(peer.drain)
        await anyio.sleep(16)
        (beat,) = rig.told(HeartbeatMeasured)
        assert beat.hub == "market" and 0.0 <= beat.rtt < 1.0
        peer.answer_pings = False
        await anyio.sleep(16)  # a second ping at 30 s, unanswered; reported at 31 s
        assert len(rig.told(HeartbeatMeasured)) == 1
        assert rig.counters()["pings"] == 2 and rig.error is None


@pytest.mark.trio
async def test_raw_tap_is_optional_and_never_blocks(autojump_clock: Any) -> None:
    async with rigged() as rig:
        del rig.ctx.refs["topic.raw"]
        rig.start()
        peer = await rig.peer()
        await peer.trade(1.0)
        await until(lambda: rig.trades() == [1.0])

        class Full(RecordingRef):
            def tell_nowait(self, msg: Any) -> None:
                raise anyio.WouldBlock

        rig.ctx.refs["topic.raw"] = Full("raw")
        rig.tell(ReconnectRequested("market", "pick up the tap"))
        peer = await rig.peer()
        await peer.trade(2.0)
        await until(lambda: rig.trades() == [1.0, 2.0])
        await anyio.sleep(2)
        assert rig.counters()["raw_dropped"] == 1


# ----------------------------------------------------------------- secrets


@pytest.mark.trio
async def test_the_token_never_shows(autojump_clock: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[httpx.Request] = []
    async with rigged(skip_negotiation=False) as rig:
        actor = rig.actor(http=negotiation(seen))
        rig.book.apply(SubscribeContract(MNQ))
        rig.start(actor)
        peer = await rig.peer()
        await peer.trade(1.0)
        rig.auth.token = NEW_TOKEN
        rig.tell(TokenIssued(token=Secret(NEW_TOKEN), expires_at=EPOCH))
        await peer.expect_close()
        await rig.peer(status=401)
        error = await rig.ended()
        assert isinstance(error, ConnectionLost)
        texts = [caplog.text, str(error), repr(error), repr(actor), repr(rig.config)]
        texts += [repr(m) for m in rig.events.told + rig.stats.told + rig.validation.told]
        for text in texts:
            assert TOKEN not in text and NEW_TOKEN not in text
            assert "SIGNATURE" not in text


# --------------------------------------------------------------- config, book


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError):
        HubConfig(hub="options", url="http://x/hubs/market")  # type: ignore[arg-type]
    for url in ("ftp://x/hubs/market", "http:///hubs", "http://u:p@x/hubs", "http://x:99999/"):
        with pytest.raises(ConfigError):
            HubConfig(hub="market", url=url)
    for field in ("keepalive_interval", "server_timeout", "connect_timeout", "report_interval"):
        value: Any
        for value in (0, -1, float("nan"), float("inf"), True, "5"):
            with pytest.raises(ConfigError):
                HubConfig(hub="market", url="http://x/hubs/market", **{field: value})
    with pytest.raises(ConfigError):
        HubConfig(hub="market", url="http://x/hubs/market", max_message_size=10)
    with pytest.raises(ConfigError):
        ConnectionActor(
            HubConfig(hub="market", url="wss://x/hubs/market"), SubscriptionBook("user")
        )


def test_book_reference_counts_shared_calls() -> None:
    book = SubscriptionBook("user")
    assert book.apply(SubscribeAccount(1, ("accounts",))) == [("SubscribeAccounts", ())]
    assert book.apply(SubscribeAccount(2, ("accounts",))) == []
    assert book.apply(UnsubscribeAccount(1, ("accounts",))) == []
    assert book.apply(UnsubscribeAccount(2, ("accounts",))) == [("UnsubscribeAccounts", ())]
    assert book.apply(UnsubscribeAccount(2)) == []
    assert len(book) == 0 and book.calls() == []


def test_book_rejects_bad_commands_atomically() -> None:
    book = SubscriptionBook("market", max_subscriptions=4)
    book.apply(SubscribeContract(MNQ))
    for command, reason in [
        (SubscribeContract(MES), "full"),
        (SubscribeAccount(1), "wrong_hub"),
        (SubscribeContract("a\x1eb"), "contract"),
        (SubscribeContract(MES, ("trades", 3)), "kinds"),  # type: ignore[arg-type]
        (Stop(), "unknown"),
    ]:
        with pytest.raises(BadCommand) as caught:
            book.apply(command)  # type: ignore[arg-type]
        assert caught.value.reason == reason
    assert book.calls() == [
        ("SubscribeContractQuotes", (MNQ,)),
        ("SubscribeContractTrades", (MNQ,)),
        ("SubscribeContractMarketDepth", (MNQ,)),
    ]
    user = SubscriptionBook("user")
    for account in (0, -1, True, 2**63, "7", 1.5):
        with pytest.raises(BadCommand):
            user.apply(SubscribeAccount(account))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SubscriptionBook("options")  # type: ignore[arg-type]


# ------------------------------------------------------- under a supervisor


@pytest.mark.trio
async def test_breaker_closes_only_when_data_flows(autojump_clock: Any) -> None:
    """#141: a probe that connects and subscribes but gets no data must not close the breaker."""
    async with anyio.create_task_group() as tg:
        net = Network()
        book = SubscriptionBook("market")
        book.apply(SubscribeContract(MNQ, ("trades",)))
        config = HubConfig(
            hub="market", url="http://gateway.test/hubs/market", skip_negotiation=True
        )
        registry = Registry(clock=lambda: EPOCH + anyio.current_time())
        events, validation = RecordingRef("topic.events"), ValidationRef("validation")
        for name, ref in [
            ("auth", AuthRef(TOKEN)),
            ("topic.events", events),
            ("validation", validation),
        ]:
            registry.register(name, ref)
        spec = ChildSpec(
            "connection.market",
            lambda: ConnectionActor(config, book, connect=net.connect),
            breaker=BreakerPolicy(failure_threshold=2, window=60, cooldown=30, jitter=0.0),
        )
        supervisor = Supervisor("hubs", [spec], registry=registry, rng=random.Random(1))
        root: Mailbox[Any] = Mailbox("root", MailboxSpec(1))
        tg.start_soon(supervisor.run, root)

        def transitions() -> list[tuple[str, str]]:
            return [(e.old, e.new) for e in events.told if isinstance(e, BreakerTransitioned)]

        for _ in range(2):  # two sockets die right after subscribing: the breaker opens
            peer = Peer(await net.accepted.receive())
            await peer.accept()
            await peer.calls(1)
            await peer.stream.aclose()
        await until(lambda: transitions() == [("closed", "open")], limit=5)

        probe = Peer(await net.accepted.receive())  # after the cool-down: one probe
        await probe.accept()
        assert await probe.calls(1) == [("SubscribeContractTrades", [MNQ])]
        await probe.send(Ping())
        await anyio.sleep(20)
        assert transitions() == [("closed", "open"), ("open", "half_open")]
        await probe.trade(1.0)
        await until(lambda: transitions()[-1] == ("half_open", "closed"))
        assert len(validation.told) == 1

        root.close()
        await probe.expect_close()
        await probe.stream.aclose()
        net.close()
        root.dispose()


# ------------------------------------------------------------ the simulator


@asynccontextmanager
async def simulated(faults: str = "", **config: Any) -> AsyncIterator[tuple[Rig, GatewaySim]]:
    """A rig whose network leads into a ``GatewaySim`` (REST through its mock transport)."""
    async with rigged(skip_negotiation=False, **config) as rig:
        gateway = GatewaySim(
            SimConfig(seed=3, rate=50.0, faults=faults), wall_time=rig.ctx.wall_time
        )
        await rig.tg.start(gateway.run)
        rig.auth.token = gateway.tokens.mint("demo")

        async def serve() -> None:
            async for stream in rig.net.accepted:
                rig.tg.start_soon(gateway.handle, stream)

        rig.tg.start_soon(serve)
        rig.start(rig.actor(http=mock_transport(gateway.rest)))
        yield rig, gateway


@pytest.mark.trio
async def test_against_the_sim_data_flows_and_faults_are_survived(autojump_clock: Any) -> None:
    async with simulated() as (rig, gateway):
        rig.tell(SubscribeContract(MNQ))
        await until(lambda: len(rig.trades()) >= 5)
        assert rig.ctx.healthy == 1
        assert {m.target for m in rig.validation.told} >= {"GatewayTrade", "GatewayQuote"}
        assert rig.told(Connected)[0].connection_id is not None

        gateway.apply(Fault("malformed", 0.0, 8.0))
        gateway.apply(Fault("oversize", 0.0, float(2 << 20)))
        before = len(rig.trades())
        await until(lambda: len(rig.trades()) >= before + 5)
        await anyio.sleep(2)
        counters = rig.counters()
        assert counters["bad.too_large"] == 1
        assert sum(v for k, v in counters.items() if k.startswith("bad.")) >= 4
        assert rig.error is None and not rig.done.is_set()

        rig.tell(Stop())
        assert await rig.ended() is None


@pytest.mark.trio
async def test_against_the_sim_a_stall_is_a_freeze(autojump_clock: Any) -> None:
    async with simulated(server_timeout=30.0) as (rig, gateway):
        rig.tell(SubscribeContract(MNQ, ("trades",)))
        await until(lambda: rig.trades())
        t0 = anyio.current_time()
        gateway.apply(Fault("stall", 0.0, 120.0))
        error = await rig.ended()
        assert isinstance(error, ConnectionLost) and "frozen" in str(error)
        assert anyio.current_time() - t0 < 31


@pytest.mark.trio
async def test_against_the_sim_an_expired_token_asks_for_a_refresh(autojump_clock: Any) -> None:
    async with simulated() as (rig, gateway):
        rig.tell(SubscribeContract(MNQ, ("trades",)))
        await until(lambda: rig.trades())
        gateway.apply(Fault("expire", 0.0))
        error = await rig.ended()
        assert isinstance(error, ConnectionLost) and "the server closed the hub" in str(error)
        rig.start(rig.actor(http=mock_transport(gateway.rest)))  # same, now expired, token
        error = await rig.ended()
        assert isinstance(error, ConnectionLost) and error.status == 401
        assert rig.auth.told == [RefreshToken()]
        rig.auth.token = gateway.tokens.mint("demo")
        count = len(rig.trades())
        rig.start(rig.actor(http=mock_transport(gateway.rest)))
        await until(lambda: len(rig.trades()) > count)  # the book came back by itself


@pytest.mark.trio
@pytest.mark.slow
async def test_against_the_sim_on_a_real_socket() -> None:
    with anyio.fail_after(5):
        async with running(SimConfig(port=0, rate=200.0)) as gateway, rigged() as rig:
            rig.auth.token = gateway.tokens.mint("demo")
            config = HubConfig(hub="market", url=f"{gateway.url}/hubs/market")
            rig.book.apply(SubscribeContract(MNQ, ("trades",)))
            rig.start(ConnectionActor(config, rig.book))
            # healthy is reported right after the first data is forwarded (a yield between)
            await until(lambda: bool(rig.trades()) and rig.ctx.healthy > 0, limit=4)
            assert rig.ctx.healthy == 1
            rig.tell(Stop())
            assert await rig.ended() is None
