"""Swap an actor in a test: replace the stats actor by a double speaking its protocol.

Run: .venv/bin/python -m pytest -q examples/swap_actor_in_test.py
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from protocols.interfaces import ActorContext, Inbox
from protocols.messages import CountersReported, Flush, HubMessageReceived
from pxnode import NodeConfig, open_node


class RecordingStats:
    """A stats double: it keeps every report it is told."""

    def __init__(self) -> None:
        self.reports: list[CountersReported] = []

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        async for msg in inbox:
            if isinstance(msg, CountersReported):
                self.reports.append(msg)


@pytest.mark.trio
async def test_validation_reports_its_rejections_to_stats() -> None:
    stats = RecordingStats()
    async with open_node(NodeConfig(tick_interval=0), overrides={"stats": stats}) as node:
        frame = msgspec.json.encode(["CON.F.US.MNQ.Z25", [{"price": "NaN?"}]])
        await node.ref("validation").tell(
            HubMessageReceived("market", "GatewayTrade", msgspec.Raw(frame), 1.7e9)
        )
        await node.ref("validation").ask(Flush(), timeout=5)
    last = [r for r in stats.reports if r.source == "validation"][-1]
    assert last.counters["trades_rejected.price"] == 1
