"""Every fault kind, end to end through a hub connection, in virtual time (trio MockClock).

Connections run over in-memory pipes straight into ``GatewaySim.handle``, so a
5 s stall or a 30 s client timeout costs milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest
import trio.testing

from protocols import gateway as gw
from protocols import signalr
from pxnode.sim import GatewaySim, SimConfig
from tests.pxnode.sim.client import HubClient, pipe_pair

START = 1_764_000_000.0
MNQ = "CON.F.US.MNQ.Z25"


class Harness:
    def __init__(self, gateway: GatewaySim, tg: anyio.abc.TaskGroup) -> None:
        self.gateway, self.tg = gateway, tg
        self.clients: list[HubClient] = []

    async def connect(self, hub: str = "market", token: str | None = None) -> HubClient:
        ours, theirs = pipe_pair()
        self.tg.start_soon(self.gateway.handle, theirs)
        client = HubClient(ours)
        self.clients.append(client)
        token = token or self.gateway.tokens.mint("demo")
        assert await client.open(f"/hubs/{hub}?access_token={token}") == 101
        assert await client.handshake() == signalr.HandshakeResponse()
        return client

    async def trades_client(self) -> HubClient:
        client = await self.connect()
        await client.invoke("SubscribeContractTrades", MNQ)
        return client


@asynccontextmanager
async def gateway(**config: Any) -> AsyncIterator[Harness]:
    t0 = anyio.current_time()
    sim = GatewaySim(SimConfig(**config), wall_time=lambda: START + anyio.current_time() - t0)
    async with anyio.create_task_group() as tg:
        await tg.start(sim.run)
        harness = Harness(sim, tg)
        try:
            yield harness
        finally:
            for client in harness.clients:
                await client.stream.aclose()
            tg.cancel_scope.cancel()


async def trade_times(client: HubClient, until: float) -> list[float]:
    """Arrival times (virtual) of GatewayTrade frames until ``until`` or the connection ends."""
    times = []
    with anyio.move_on_at(until):
        while True:
            event = await client.event()
            if event is signalr.CLOSED:
                break
            if isinstance(event, signalr.Invocation) and event.target == "GatewayTrade":
                times.append(anyio.current_time())
    return times


@pytest.mark.trio
async def test_stall_goes_silent_then_resumes(autojump_clock: trio.testing.MockClock) -> None:
    async with gateway(faults="stall@2:5") as h:
        client = await h.trades_client()
        t0 = anyio.current_time()
        times = await trade_times(client, t0 + 10)
        silent = [t for t in times if t0 + 2.05 < t < t0 + 6.95]
        assert not silent and any(t > t0 + 7 for t in times) and any(t < t0 + 2 for t in times)
        assert h.gateway.faults[0].kind == "stall"


@pytest.mark.trio
async def test_drop_aborts_without_a_close_frame(autojump_clock: trio.testing.MockClock) -> None:
    async with gateway(faults="drop@1") as h:
        market, user = await h.trades_client(), await h.connect("user")
        await trade_times(market, anyio.current_time() + 5)
        assert market.close_code is None and await user.closed() is None
        assert not h.gateway.connections


@pytest.mark.trio
async def test_malformed_frames_arrive_and_the_feed_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gateway(faults="malformed@1:8") as h:
        client = await h.trades_client()
        bad, odd_targets, trades_after = 0, set(), 0
        with anyio.move_on_after(3):
            while True:
                event = await client.event()
                if isinstance(event, signalr.BadMessage):
                    bad += 1
                elif isinstance(event, signalr.Invocation):
                    if event.target != "GatewayTrade":
                        odd_targets.add(event.target)
                    else:
                        try:
                            gw.TRADE_ARGS.decode(event.arguments)
                        except msgspec.ValidationError:
                            bad += 1
                        else:
                            trades_after += bad > 0
        assert bad >= 6 and "GatewayMystery" in odd_targets and trades_after > 0


@pytest.mark.trio
async def test_oversize_frame(autojump_clock: trio.testing.MockClock) -> None:
    async with gateway(faults="oversize@1:3000000") as h:
        client = await h.trades_client()
        client.codec = signalr.SignalRConnection(signalr.Role.CLIENT)  # a 1 MiB cap, open
        client.codec.send(signalr.HandshakeRequest())
        client.codec.receive_data(b"{}\x1e")
        assert client.codec.next_event() == signalr.HandshakeResponse()
        seen = []
        with anyio.move_on_after(3):
            while True:
                seen.append(await client.event())
        too_large = [e for e in seen if isinstance(e, signalr.BadMessage)]
        assert [e.reason for e in too_large] == ["too_large"]
        after = seen.index(too_large[0])
        assert any(isinstance(e, signalr.Invocation) for e in seen[after:])  # still connected


@pytest.mark.trio
@pytest.mark.parametrize(("kind", "reconnect"), [("expire", True), ("revoke", False)])
async def test_token_faults_close_hubs_and_refuse_old_tokens(
    autojump_clock: trio.testing.MockClock, kind: str, reconnect: bool
) -> None:
    async with gateway(faults=f"{kind}@1") as h:
        old = h.gateway.tokens.mint("demo")
        client = await h.connect("market", old)
        events = []
        while (event := await client.event()) is not signalr.CLOSED:
            events.append(event)
        (close,) = [e for e in events if isinstance(e, signalr.Close)]
        assert close.error and "token" in close.error and close.allow_reconnect is reconnect
        assert await client.closed() == 1000
        status, _, _ = h.gateway.rest.handle(
            "POST", "/api/Account/search", [(b"authorization", f"Bearer {old}".encode())], b"{}"
        )
        assert status == 401
        ours, theirs = pipe_pair()
        h.tg.start_soon(h.gateway.handle, theirs)
        refused = HubClient(ours)
        h.clients.append(refused)
        assert await refused.open(f"/hubs/market?access_token={old}") == 401
        await h.connect("market")  # a fresh token works


@pytest.mark.trio
async def test_rest_faults_are_armed_on_time(autojump_clock: trio.testing.MockClock) -> None:
    async with gateway(faults="rest429@1:2,rest500@2") as h:
        rest = h.gateway.rest
        assert rest.handle("GET", "/api/Status/ping", [], b"")[0] == 200
        await anyio.sleep(2.5)
        statuses = [rest.handle("GET", "/api/Status/ping", [], b"")[0] for _ in range(4)]
        assert statuses == [429, 429, 500, 200]


@pytest.mark.trio
async def test_slow_writes_coalesce(autojump_clock: trio.testing.MockClock) -> None:
    async with gateway(faults="slow@3:4", tick=0.01, rate=500) as h:
        client = await h.trades_client()
        t0 = anyio.current_time()
        await trade_times(client, t0 + 3)
        normal = client.messages
        await trade_times(client, t0 + 6)
        slow = client.messages - normal
        assert normal > 100 and slow <= 35  # ~60 messages/s before, one per 0.1 s after


@pytest.mark.trio
async def test_burst(autojump_clock: trio.testing.MockClock) -> None:
    async with gateway(faults="burst@1:5000", rate=10, contracts=(MNQ,)) as h:
        client = await h.trades_client()
        total = 0
        with anyio.move_on_after(2):
            while True:
                event = await client.invocation("GatewayTrade")
                total += len(gw.TRADE_ARGS.decode(event.arguments)[1])  # type: ignore[arg-type]
        assert 5000 <= total < 5100


@pytest.mark.trio
async def test_an_outbox_that_overflows_drops_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gateway(faults="stall@1:100,malformed@2:2000") as h:
        client = await h.trades_client()
        await trade_times(client, anyio.current_time() + 5)
        assert h.gateway.counters["dropped_slow"] == 1 and not h.gateway.connections


@pytest.mark.trio
async def test_keepalive_and_client_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with gateway() as h:
        client = await h.connect("user")
        t0 = anyio.current_time()
        assert await client.event() == signalr.Ping()
        assert 15 <= anyio.current_time() - t0 < 16
        events = []
        while (event := await client.event()) is not signalr.CLOSED:
            events.append(event)
        assert 30 <= anyio.current_time() - t0 < 31
        assert events[-1] == signalr.Close("Server timeout elapsed without receiving a message.")
        assert h.gateway.counters["client_timeouts"] == 1


@pytest.mark.trio
async def test_a_client_that_never_handshakes_is_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with gateway() as h:
        ours, theirs = pipe_pair()
        h.tg.start_soon(h.gateway.handle, theirs)
        client = HubClient(ours)
        h.clients.append(client)
        assert await client.open(f"/hubs/market?access_token={h.gateway.tokens.mint('d')}") == 101
        assert await client.closed() is None


@pytest.mark.trio
async def test_the_feed_is_deterministic_for_a_seed(autojump_clock: trio.testing.MockClock) -> None:
    async def feed(seed: int) -> list[bytes]:
        async with gateway(seed=seed) as h:
            client = await h.trades_client()
            frames = []
            with anyio.move_on_after(2):
                while True:
                    frames.append(bytes((await client.invocation("GatewayTrade")).arguments))
            return frames

    first = await feed(3)
    assert first and first == await feed(3) and first != await feed(4)
