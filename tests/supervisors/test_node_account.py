"""The node's account state: snapshots and ``stream_user`` from user-hub frames, on both
backends, and from the simulated gateway's demo account, through the user hub and the REST
searches (at start and after a reconnect, with a gateway that sends no snapshot)."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

from protocols.account import AccountChanged, FillReceived, OrderChanged, PositionChanged
from protocols.messages import Flush, HubMessageReceived
from pxnode.sim import DEMO_ACCOUNT_ID, Fault, SimConfig, gateway_config, running
from pxnode.testing import ES, HOSTS, MNQ, SimNode, sim_node, until
from supervisors.config import NodeConfig
from supervisors.node import Node, open_node


async def user_frame(node: Node, target: str, payload: dict[str, Any]) -> None:
    now = node.registry.wall_time()
    raw = msgspec.Raw(msgspec.json.encode([{"action": 1, "data": payload}]))
    await node.ref("validation").tell(HubMessageReceived("user", target, raw, now))
    await node.ref("validation").ask(Flush(), timeout=1)


ORDER = {"id": 9002, "accountId": 7001, "contractId": MNQ, "creationTimestamp": "T",
         "status": 1, "type": 1, "side": 1, "size": 2, "limitPrice": 21100.0}  # fmt: skip
POSITION = {"id": 6001, "accountId": 7001, "contractId": MNQ, "creationTimestamp": "T",
            "type": 1, "size": 2, "averagePrice": 21000.0}  # fmt: skip
ACCOUNT = {"id": 7001, "name": "PRAC", "balance": 50_000.0, "canTrade": True,
           "isVisible": True, "simulated": True}  # fmt: skip
TRADE = {"id": 8001, "accountId": 7001, "contractId": MNQ, "creationTimestamp": "T",
         "price": 21000.0, "profitAndLoss": None, "fees": 0.37, "side": 0, "size": 2,
         "voided": False, "orderId": 9001}  # fmt: skip


@pytest.mark.anyio
async def test_user_frames_reach_the_snapshots_and_the_stream() -> None:
    async with open_node(NodeConfig(tick_interval=0.05, max_fills=1)) as node:
        with node.stream_user(capacity=16) as stream:
            await user_frame(node, "GatewayUserAccount", ACCOUNT)
            await user_frame(node, "GatewayUserPosition", POSITION)
            await user_frame(node, "GatewayUserOrder", ORDER)
            await user_frame(node, "GatewayUserTrade", TRADE)
            await user_frame(node, "GatewayUserTrade", {**TRADE, "id": 8002})
            with anyio.fail_after(5):
                events = [await stream.receive() for _ in range(5)]
            accounts, positions = await node.accounts(), await node.positions()
            orders, fills = await node.orders(), await node.fills()
            state = await node.account_state()
    assert [type(e) for e in events] == [
        AccountChanged, PositionChanged, OrderChanged, FillReceived, FillReceived,
    ]  # fmt: skip
    assert [a.id for a in accounts] == [7001]
    assert [(p.contract, p.side, p.size) for p in positions] == [(MNQ, "long", 2)]
    assert [(o.id, o.status) for o in orders] == [(9002, "open")]
    assert [f.id for f in fills] == [8002] and state.fills_dropped == 1


@pytest.mark.trio
async def test_the_demo_account_arrives_from_the_sim(autojump_clock: object) -> None:
    async with sim_node() as h:
        await until(lambda: h.net.open_sockets() >= 2)
        state = await h.node.account_state()
        while not (state.accounts and state.positions and state.orders):
            await anyio.sleep(0.5)
            state = await h.node.account_state()
    assert [a.id for a in state.accounts] == [DEMO_ACCOUNT_ID]
    assert [(p.contract, p.side, p.size) for p in state.positions] == [(MNQ, "long", 2)]
    assert [(o.type, o.side, o.status) for o in state.orders] == [("limit", "ask", "open")]


@pytest.mark.trio
async def test_the_demo_traders_fills_reach_the_node(autojump_clock: object) -> None:
    quiet = SimConfig(seed=3, rate=5.0, contracts=(MNQ, ES), tick=0.5)  # the trader, not the feed
    async with sim_node(sim=quiet) as h:
        await anyio.sleep(300)
        demo = h.sim.accounts
        await until(lambda: len(demo.trades) > 3)
        await anyio.sleep(1)  # the last frames cross the socket
        state = await h.node.account_state()
    assert [f.id for f in state.fills] == [t.id for t in demo.trades]
    assert [(p.size, p.average_price) for p in state.positions] == [
        (p.size, p.average_price) for p in demo.positions
    ]
    (account,) = state.accounts
    assert account.balance != 50_000.0


# ------------------------------------------- a gateway that sends no snapshot (REST)

ACCOUNT_PATHS = ["/api/Account/search", "/api/Position/searchOpen", "/api/Order/searchOpen",
                 "/api/Trade/search"]  # fmt: skip


def rest_calls(h: SimNode) -> list[str]:
    return [call.path for call in h.net.rest if call.path in ACCOUNT_PATHS]


@pytest.mark.anyio
async def test_without_a_snapshot_the_account_comes_from_rest_on_both_backends() -> None:
    quiet = SimConfig(seed=3, rate=20.0, contracts=(MNQ,), user_snapshot=False)
    async with running(quiet) as sim:
        config = NodeConfig(
            contracts=[MNQ],
            history_bars=0,
            gateway=gateway_config(sim.url),  # no account configured: the node finds it
        )
        async with open_node(config) as node:
            with anyio.fail_after(10):
                while (state := await node.account_state()).synced_at is None:  # noqa: ASYNC110 - polls a snapshot
                    await anyio.sleep(0.05)
    assert [a.id for a in state.accounts] == [DEMO_ACCOUNT_ID]
    assert [(p.contract, p.side, p.size) for p in state.positions] == [(MNQ, "long", 2)]
    assert [(o.type, o.side, o.status) for o in state.orders] == [("limit", "ask", "open")]
    assert state.sync_error is None and state.point_values == {MNQ: 2.0}  # Contract/searchById


@pytest.mark.trio
async def test_a_reconnect_resyncs_from_rest_what_the_hub_missed(autojump_clock: object) -> None:
    quiet = SimConfig(seed=3, rate=5.0, contracts=(MNQ, ES), tick=0.5, user_snapshot=False)
    async with sim_node(sim=quiet, faults=(Fault("rest500", 0.0, 3.0),)) as h:
        await until(lambda: rest_calls(h) == ACCOUNT_PATHS)  # the login took the 500s
        first = await h.node.account_state()
        assert [p.size for p in first.positions] == [p.size for p in h.sim.accounts.positions]
        assert [o.id for o in first.orders] == [9002] and first.synced_at is not None
        h.net.refused.add(HOSTS["user"])
        h.sim.apply(Fault("drop", 0.0))
        await anyio.sleep(120)  # the demo trader trades while the user hub is away
        h.net.refused.clear()
        await until(lambda: len(rest_calls(h)) == 8, limit=300)
        await anyio.sleep(1)
        state = await h.node.account_state()
        demo = h.sim.accounts
    assert rest_calls(h) == ACCOUNT_PATHS * 2
    assert [(p.size, p.average_price) for p in state.positions] == [
        (p.size, p.average_price) for p in demo.positions
    ]
    assert [o.id for o in state.orders] == [o.id for o in demo.open_orders(DEMO_ACCOUNT_ID)]
    assert {f.id for f in state.fills} >= {t.id for t in demo.trades[1:]}
    assert state.sync_error is None
