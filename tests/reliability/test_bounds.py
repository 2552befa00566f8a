"""Issue 12 deliver 5: what a live node keeps per contract is bounded by what it subscribed.

A frame of a contract the node never subscribed (a gateway bug, a hostile feed) is
counted and dropped instead of growing validation's and bars' per-contract state;
a contract subscribed at run time is admitted from its first trade.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from protocols.messages import Flush, GetContracts, HubMessageReceived
from pxnode.testing import ES, MNQ, node_config, sim_node

OTHER = "CON.F.US.ENQ.Z25"


def trade_frame(contract: str, wall: float) -> HubMessageReceived:
    stamp = datetime.fromtimestamp(wall, UTC).isoformat()
    item = {"symbolId": "F.US.X", "price": 100.0, "timestamp": stamp, "type": 0, "volume": 1}
    raw = msgspec.Raw(msgspec.json.encode([contract, [item]]))
    return HubMessageReceived("market", "GatewayTrade", raw, wall)


@pytest.mark.trio
async def test_trades_of_contracts_not_subscribed_are_counted_and_dropped(
    autojump_clock: Any,
) -> None:
    config = msgspec.structs.replace(node_config(), contracts=[MNQ])
    async with sim_node(config=config) as h:
        validation = h.node.ref("validation")
        for contract in (OTHER, ES):
            await validation.tell(trade_frame(contract, h.wall()))
        counters: dict[str, int] = await validation.ask(Flush(), timeout=5)
        assert counters["frames_unsubscribed"] == 2
        assert set(await validation.ask(GetContracts(), timeout=5)) <= {MNQ}

        await h.node.subscribe([ES])
        await validation.tell(trade_frame(ES, h.wall()))
        counters = await validation.ask(Flush(), timeout=5)
        assert counters["frames_unsubscribed"] == 2
        assert ES in await validation.ask(GetContracts(), timeout=5)
