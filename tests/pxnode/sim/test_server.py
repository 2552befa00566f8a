"""The gateway on real loopback sockets: REST over h11, hubs over wsproto, the actor form."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from protocols import gateway as gw
from protocols import signalr
from pxnode.sim import GatewaySim, SimConfig, running, serve
from tests.pxnode.sim.client import HubClient

pytestmark = pytest.mark.anyio
MNQ = "CON.F.US.MNQ.Z25"
FAST: dict[str, Any] = {"rate": 2000.0, "tick": 0.005}


@asynccontextmanager
async def hub(gateway: GatewaySim, target: str, headers: Any = None) -> AsyncIterator[HubClient]:
    stream = await anyio.connect_tcp("127.0.0.1", gateway.port)
    async with stream:
        yield HubClient(stream)


async def login(http: httpx.AsyncClient) -> str:
    answer = await http.post(
        "/api/Auth/loginKey", json={"userName": "demo", "apiKey": "demo-api-key"}
    )
    token = msgspec.json.decode(answer.content, type=gw.LoginResponse).token
    assert token
    return token


async def test_rest_over_a_real_socket_with_keep_alive(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with (
            running(SimConfig(**FAST)) as gateway,
            httpx.AsyncClient(base_url=gateway.url) as http,
        ):
            token = await login(http)
            headers = {"Authorization": f"Bearer {token}"}
            for _ in range(3):  # one connection, several requests
                answer = await http.post("/api/Contract/available", json={}, headers=headers)
                found = msgspec.json.decode(answer.content, type=gw.ContractSearchResponse)
                assert found.contracts is not None and len(found.contracts) == 4
            assert (await http.get("/api/Status/ping")).text == "pong"
            assert (await http.post("/api/Account/search", json={})).status_code == 401
            assert gateway.counters["http_requests"] == 6


async def test_malformed_http_gets_400(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with running(SimConfig()) as gateway:
            stream = await anyio.connect_tcp("127.0.0.1", gateway.port)
            async with stream:
                await stream.send(b"NONSENSE\r\n\r\n")
                reply = b""
                with anyio.move_on_after(2):
                    while True:
                        try:
                            reply += await stream.receive()
                        except anyio.EndOfStream:
                            break
            assert reply.startswith(b"HTTP/1.1 400")


async def subscribe_all(client: HubClient) -> dict[str, Any]:
    """Subscribe to MNQ trades, quotes and depth; the first payload of each, decoded strictly."""
    assert await client.handshake() == signalr.HandshakeResponse()
    for i, method in enumerate(
        ("SubscribeContractTrades", "SubscribeContractQuotes", "SubscribeContractMarketDepth")
    ):
        await client.invoke(method, MNQ, invocation_id=str(i))
    seen: dict[str, Any] = {}
    completions: set[str | None] = set()
    while len(seen) < 3 or len(completions) < 3:
        event = await client.event()
        assert event is not signalr.CLOSED
        if isinstance(event, signalr.Completion):
            assert event.error is None
            completions.add(event.invocation_id)
        elif isinstance(event, signalr.Invocation):
            decoder: dict[str, msgspec.json.Decoder[Any]] = {
                "GatewayTrade": gw.TRADE_ARGS,
                "GatewayQuote": gw.QUOTE_ARGS,
            }
            contract, payload = decoder.get(event.target, gw.DEPTH_ARGS).decode(event.arguments)
            assert contract == MNQ
            seen.setdefault(event.target, payload)
    return seen


@pytest.mark.parametrize("flow", ["negotiate-v1", "negotiate-v0", "skip", "bearer-header"])
async def test_hub_flows_subscribe_and_receive(anyio_backend: str, flow: str) -> None:
    with anyio.fail_after(5):
        async with (
            running(SimConfig(**FAST)) as gateway,
            httpx.AsyncClient(base_url=gateway.url) as http,
        ):
            token = await login(http)
            target, headers = f"/hubs/market?access_token={token}", []
            if flow.startswith("negotiate"):
                version = flow[-1]
                answer = await http.post(
                    f"/hubs/market/negotiate?negotiateVersion={version}&access_token={token}"
                )
                body = answer.json()
                key = body["connectionToken"] if version == "1" else body["connectionId"]
                target += f"&id={key}"
            elif flow == "bearer-header":
                target, headers = "/hubs/market", [(b"authorization", f"Bearer {token}".encode())]
            async with hub(gateway, target) as client:
                assert await client.open(target, headers) == 101
                seen = await subscribe_all(client)
            trades = seen["GatewayTrade"]
            assert isinstance(trades, list) and all(isinstance(t, gw.TradeItem) for t in trades)
            assert trades[0].timestamp.endswith("+00:00") and trades[0].type in (0, 1)
            assert isinstance(seen["GatewayQuote"], gw.QuoteItem)
            assert all(isinstance(d, gw.DepthItem) for d in seen["GatewayDepth"])


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/hubs/market", 401),
        ("/hubs/market?access_token=bad.token.here", 401),
        ("/hubs/user?access_token={token}&id=unknown", 404),
        ("/hubs/other?access_token={token}", 404),
    ],
)
async def test_upgrades_are_refused_before_the_101(
    anyio_backend: str, target: str, status: int
) -> None:
    with anyio.fail_after(5):
        async with running(SimConfig()) as gateway, httpx.AsyncClient(base_url=gateway.url) as http:
            token = await login(http)
            async with hub(gateway, target) as client:
                assert await client.open(target.format(token=token)) == status
            plain = await http.get(f"/hubs/market?access_token={token}")
            assert plain.status_code == 400  # a hub without a websocket upgrade


async def test_an_empty_text_frame_from_a_client_is_nothing(anyio_backend: str) -> None:
    """It once reached the session's codec as b"" (its EOF): the hub stopped listening."""
    with anyio.fail_after(5):
        async with running(SimConfig(**FAST)) as gateway:
            token = gateway.tokens.mint("demo")
            async with hub(gateway, "") as client:
                assert await client.open(f"/hubs/market?access_token={token}") == 101
                await client.send_raw(b"")  # before the handshake
                assert await client.handshake() == signalr.HandshakeResponse()
                await client.send_raw(b"")  # and after it
                await client.invoke("SubscribeContractTrades", MNQ)
                await client.invocation("GatewayTrade")


async def test_websocket_ping_and_signalr_keepalive(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with running(SimConfig(ping_interval=0.2)) as gateway:
            token = gateway.tokens.mint("demo")
            async with hub(gateway, "") as client:
                assert await client.open(f"/hubs/user?access_token={token}") == 101
                assert await client.handshake() == signalr.HandshakeResponse()
                await client.ping()
                assert await client.event() == signalr.Ping()  # SignalR keep-alive
                assert client.pongs == 1  # and the websocket ping was answered
                await client.send(signalr.Close())
                assert await client.closed() == 1000  # the server closes the websocket


async def test_user_hub_over_a_socket(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with running(SimConfig()) as gateway, hub(gateway, "") as client:
            assert (
                await client.open(f"/hubs/user?access_token={gateway.tokens.mint('demo')}") == 101
            )
            await client.handshake()
            await client.invoke("SubscribePositions", 7001)
            event = await client.invocation("GatewayUserPosition")
            (raw,) = msgspec.json.decode(event.arguments, type=tuple[msgspec.Raw])
            assert gw.decode_user_event(gw.UserPosition, raw).data.account_id == 7001


async def test_serve_reports_its_port_and_stops_on_cancel(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, SimConfig())
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"http://127.0.0.1:{port}/api/Status/ping")).text == "pong"
            tg.cancel_scope.cancel()
