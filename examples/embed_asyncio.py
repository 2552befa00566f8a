"""Embed pxnode in an asyncio application: validated trades and health.

Run: .venv/bin/python examples/embed_asyncio.py [seconds]
"""

from __future__ import annotations

import asyncio
import sys

from pxnode import NodeConfig, OverflowPolicy, open_node
from pxnode.sim import SimConfig, gateway_config, running


async def main(seconds: float) -> None:
    async with running(SimConfig(rate=300.0)) as sim:
        config = NodeConfig(
            contracts=["CON.F.US.MNQ.Z25", "CON.F.US.EP.Z25"],
            gateway=gateway_config(sim.url),
        )
        async with open_node(config) as node:
            count = 0
            # A lossless subscription: BLOCK applies backpressure instead of dropping.
            with node.stream_trades(capacity=4096, policy=OverflowPolicy.BLOCK) as trades:
                try:
                    async with asyncio.timeout(seconds):
                        async for batch in trades:
                            count += len(batch.trades)
                except TimeoutError:
                    pass
            health = await node.health()
            print(f"{count} trades; healthy={health.healthy} score={health.score:.2f}")


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0))
