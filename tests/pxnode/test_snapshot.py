"""The --json status line: its schema and that it reflects the node."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
import pytest

from protocols.account import AccountState, GetAccountState, OpenPosition
from protocols.interfaces import ActorContext, Inbox
from protocols.messages import Flush, HubMessageReceived, Request, Stop
from pxnode.snapshot import NodeSnapshot, take_snapshot
from supervisors.config import NodeConfig
from supervisors.node import open_node

MNQ = "CON.F.US.MNQ.Z25"


@pytest.mark.trio
async def test_snapshot_reflects_accepted_and_rejected_trades(autojump_clock: object) -> None:
    config = NodeConfig(contracts=[MNQ, "CON.F.US.EP.Z25"], tick_interval=0.5)
    async with open_node(config) as node:
        now = node.registry.wall_time()
        stamp = datetime.fromtimestamp(now, UTC).isoformat()
        items = [
            {"symbolId": "F.US.MNQ", "price": p, "timestamp": stamp, "type": 0, "volume": 1}
            for p in (100.0, 100.5, -1.0)
        ]
        frame = msgspec.Raw(msgspec.json.encode([MNQ, items]))
        await node.ref("validation").tell(HubMessageReceived("market", "GatewayTrade", frame, now))
        await node.ref("validation").ask(Flush(), timeout=1)
        await anyio.sleep(1.1)  # a tick carries the counters to stats
        snap = await take_snapshot(node)
    line = msgspec.json.decode(msgspec.json.encode(snap))
    assert set(line) == set(NodeSnapshot.__struct_fields__)
    assert snap.trades_accepted == 2
    assert snap.trades_rejected["price"] == 1 and set(snap.trades_rejected) >= {"spike", "stale"}
    assert snap.contracts[MNQ].last_price == 100.5 and snap.contracts[MNQ].trades == 2
    assert snap.contracts["CON.F.US.EP.Z25"].trades == 0
    assert snap.breaker == {"market": "closed", "user": "closed"}
    assert 0 <= snap.health_score < 1 and not snap.healthy  # no hub is connected here
    assert snap.rss_bytes > 0 and snap.mailbox_drops == 0
    datetime.fromisoformat(snap.ts)


def user(target: str, payload: dict[str, object], now: float) -> HubMessageReceived:
    return HubMessageReceived("user", target, msgspec.Raw(msgspec.json.encode([payload])), now)


@pytest.mark.trio
async def test_snapshot_shows_the_account_its_positions_and_open_pnl(
    autojump_clock: object,
) -> None:
    async with open_node(NodeConfig(contracts=[MNQ], tick_interval=0.5)) as node:
        now = node.registry.wall_time()
        stamp = datetime.fromtimestamp(now, UTC).isoformat()
        trade = {"symbolId": "F.US.MNQ", "price": 21010.0, "timestamp": stamp, "type": 0,
                 "volume": 1}  # fmt: skip
        frames = [
            HubMessageReceived(
                "market", "GatewayTrade", msgspec.Raw(msgspec.json.encode([MNQ, [trade]])), now
            ),
            user("GatewayUserAccount", {"id": 1, "name": "PRAC-1", "balance": 5e4,
                 "canTrade": True, "isVisible": True, "simulated": True}, now),
            user("GatewayUserPosition", {"id": 2, "accountId": 1, "contractId": MNQ,
                 "creationTimestamp": stamp, "type": 2, "size": 3, "averagePrice": 21000.0}, now),
            user("GatewayUserOrder", {"id": 3, "accountId": 1, "contractId": MNQ,
                 "creationTimestamp": stamp, "status": 1, "type": 4, "side": 0, "size": 3,
                 "stopPrice": 21050.0}, now),
        ]  # fmt: skip
        for frame in frames:
            await node.ref("validation").tell(frame)
        await node.ref("validation").ask(Flush(), timeout=1)
        snap = await take_snapshot(node)
    line = msgspec.json.decode(msgspec.json.encode(snap))
    assert line["accounts"] == [
        {"id": 1, "name": "PRAC-1", "balance": 5e4, "can_trade": True, "open_pnl": -60.0}
    ]
    (position,) = line["positions"]
    assert position["symbol"] == "MNQZ5" and position["side"] == "short"
    assert position["open_pnl_points"] == -30.0 and position["open_pnl"] == -60.0  # $2/point
    (order,) = line["orders"]
    assert (order["type"], order["side"], order["status"]) == ("stop", "bid", "open")
    assert line["fills"] == 0


class TickValues:
    """An account actor holding one short position in a contract no catalogue knows, with
    the point value Contract/searchById gave."""

    def __init__(self, contract: str) -> None:
        position = OpenPosition(1, contract, "short", 3, 100.0, "T")
        self.state = AccountState((), (position,), (), (), 0, 0, point_values={contract: 5.0})

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        ctx.report_healthy()
        async for msg in inbox:
            if isinstance(msg, Stop):
                return
            if isinstance(msg, Request) and isinstance(msg.body, GetAccountState):
                msg.reply.tell_nowait(self.state)


@pytest.mark.trio
async def test_open_pnl_is_money_for_a_contract_priced_by_the_gateway(
    autojump_clock: object,
) -> None:
    other = "CON.F.US.XYZ.Z25"  # not in the sim's catalogue
    async with open_node(NodeConfig(tick_interval=0.5), {"account": TickValues(other)}) as node:
        now = node.registry.wall_time()
        stamp = datetime.fromtimestamp(now, UTC).isoformat()
        trade = {"symbolId": "F.US.XYZ", "price": 99.0, "timestamp": stamp, "type": 0,
                 "volume": 1}  # fmt: skip
        frame = msgspec.Raw(msgspec.json.encode([other, [trade]]))
        await node.ref("validation").tell(HubMessageReceived("market", "GatewayTrade", frame, now))
        await node.ref("validation").ask(Flush(), timeout=1)
        snap = await take_snapshot(node)
    (position,) = snap.positions
    assert (position.open_pnl_points, position.open_pnl) == (3.0, 15.0)  # $5/point
