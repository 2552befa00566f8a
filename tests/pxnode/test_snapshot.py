"""The --json status line: its schema and that it reflects the node."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import msgspec
import pytest

from protocols.messages import Flush, HubMessageReceived
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
