"""Embed pxnode in a trio application: stream bars from a (simulated) gateway.

Run: .venv/bin/python examples/embed_trio.py [seconds]

Against the real gateway, drop the simulator and set GatewayConfig() with
PROJECT_X_USERNAME / PROJECT_X_API_KEY in the environment.
"""

from __future__ import annotations

import sys

import trio

from pxnode import BarClosed, BarsConfig, BarUpdated, NodeConfig, open_node
from pxnode.sim import SimConfig, gateway_config, running

MNQ = "CON.F.US.MNQ.Z25"


async def main(seconds: float) -> None:
    async with running(SimConfig(rate=500.0)) as sim:
        config = NodeConfig(
            contracts=[MNQ],
            bars=BarsConfig(timeframes=["1sec", "1min"]),
            gateway=gateway_config(sim.url),
        )
        async with open_node(config) as node:
            with trio.move_on_after(seconds), node.stream_bars() as bars:
                async for msg in bars:
                    if isinstance(msg, BarClosed):
                        bar = msg.bar
                        print(
                            f"closed {bar.timeframe} {bar.start} close={bar.close} v={bar.volume}"
                        )
                    elif isinstance(msg, BarUpdated) and msg.closed:
                        print(f"corrected {msg.bar.timeframe} {msg.bar.start}")
            frame = await node.bars(MNQ, "1sec", 5)
            print(frame)


if __name__ == "__main__":
    trio.run(main, float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
