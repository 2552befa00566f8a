"""Off-the-shelf SignalR clients (pysignalr, signalrcore) against the sim, both hub flows.

Each test is bounded by a timeout so a client that never gets its data fails
instead of hanging. pysignalr is asyncio-only; signalrcore is threaded and runs
in worker threads.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import anyio
import msgspec
import pytest
from pysignalr.client import SignalRClient
from signalrcore.hub_connection_builder import HubConnectionBuilder

from protocols import gateway as gw
from pxnode.sim import SimConfig, running

pytestmark = pytest.mark.anyio
MNQ = "CON.F.US.MNQ.Z25"
MARKET = ("GatewayQuote", "GatewayTrade", "GatewayDepth")
SUBSCRIBE = ("SubscribeContractQuotes", "SubscribeContractTrades", "SubscribeContractMarketDepth")
# Short keep-alives: signalrcore's stop() closes its socket under a thread blocked in
# recv() and joins it, so it returns only once the server sends something.
CONFIG = SimConfig(rate=2000.0, tick=0.005, ping_interval=0.2)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _quiet_clients() -> None:
    for name in ("pysignalr", "SignalRCoreClient", "websockets"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def check_market(received: dict[str, Any]) -> None:
    contract, trades = msgspec.convert(received["GatewayTrade"], tuple[str, list[gw.TradeItem]])
    assert contract == MNQ and trades and trades[0].timestamp.endswith("+00:00")
    msgspec.convert(received["GatewayQuote"], tuple[str, gw.QuoteItem])
    msgspec.convert(received["GatewayDepth"], tuple[str, list[gw.DepthItem]])


@pytest.mark.parametrize("flow", ["negotiate", "skip_negotiation", "header"])
async def test_pysignalr_market_hub(anyio_backend: str, flow: str) -> None:
    with anyio.fail_after(10):
        async with running(CONFIG) as gateway:
            token = gateway.tokens.mint("demo")
            url, headers = f"ws://127.0.0.1:{gateway.port}/hubs/market?access_token={token}", None
            if flow == "header":
                url, headers = f"{gateway.url}/hubs/market", {"Authorization": f"Bearer {token}"}
            client = SignalRClient(url, headers=headers)
            # pysignalr exposes skip_negotiation only on its transport (what ProjectX SDKs set)
            client._transport._skip_negotiation = flow == "skip_negotiation"
            received: dict[str, Any] = {}
            done = anyio.Event()

            def keep(target: str) -> Any:
                async def on_event(arguments: Any) -> None:
                    received.setdefault(target, arguments)
                    if len(received) == len(MARKET):
                        done.set()

                return on_event

            async def on_open() -> None:
                for method in SUBSCRIBE:
                    await client.send(method, [MNQ])  # type: ignore[list-item]

            for target in MARKET:
                client.on(target, keep(target))
            client.on_open(on_open)
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.run)
                await done.wait()
                tg.cancel_scope.cancel()
            check_market(received)


async def test_pysignalr_user_hub(anyio_backend: str) -> None:
    with anyio.fail_after(10):
        async with running(CONFIG) as gateway:
            token = gateway.tokens.mint("demo")
            client = SignalRClient(f"{gateway.url}/hubs/user?access_token={token}")
            got: list[Any] = []
            done = anyio.Event()

            async def on_account(arguments: Any) -> None:
                got.append(arguments)
                done.set()

            async def on_open() -> None:
                await client.send("SubscribeAccounts", [])

            client.on("GatewayUserAccount", on_account)
            client.on_open(on_open)
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.run)
                await done.wait()
                tg.cancel_scope.cancel()
            (account,) = msgspec.convert(got[0], tuple[gw.UserAccount])
            assert account.id == 7001


def signalrcore_session(
    url: str, token: str, skip: bool, calls: list[tuple[str, list[Any]]], targets: tuple[str, ...]
) -> dict[str, Any]:
    """Connect, subscribe and collect one event per target; runs in a worker thread."""
    received: dict[str, Any] = {}
    opened, complete = threading.Event(), threading.Event()
    connection = (
        HubConnectionBuilder()
        .with_url(url, options={"access_token_factory": lambda: token, "skip_negotiation": skip})
        .build()
    )

    def keep(target: str) -> Any:
        def on_event(arguments: Any) -> None:
            received.setdefault(target, arguments)
            if len(received) == len(targets):
                complete.set()

        return on_event

    for target in targets:
        connection.on(target, keep(target))
    connection.on_open(opened.set)
    connection.start()
    try:
        assert opened.wait(5), "no handshake"
        for method, arguments in calls:
            connection.send(method, arguments)
        assert complete.wait(5), f"only got {sorted(received)}"
    finally:
        connection.stop()
    return received


@pytest.mark.parametrize("skip", [False, True])
async def test_signalrcore_market_hub(anyio_backend: str, skip: bool) -> None:
    with anyio.fail_after(15):
        async with running(CONFIG) as gateway:
            token = gateway.tokens.mint("demo")
            calls = [(method, [MNQ]) for method in SUBSCRIBE]
            received = await anyio.to_thread.run_sync(
                signalrcore_session, f"{gateway.url}/hubs/market", token, skip, calls, MARKET
            )
            check_market(received)


@pytest.mark.parametrize("skip", [False, True])
async def test_signalrcore_user_hub(anyio_backend: str, skip: bool) -> None:
    with anyio.fail_after(15):
        async with running(CONFIG) as gateway:
            token = gateway.tokens.mint("demo")
            calls: list[tuple[str, list[Any]]] = [
                ("SubscribeAccounts", []),
                ("SubscribePositions", [7001]),
            ]
            targets = ("GatewayUserAccount", "GatewayUserPosition")
            received = await anyio.to_thread.run_sync(
                signalrcore_session, f"{gateway.url}/hubs/user", token, skip, calls, targets
            )
            (position,) = received["GatewayUserPosition"]
            assert position["action"] == 1 and position["data"]["accountId"] == 7001
