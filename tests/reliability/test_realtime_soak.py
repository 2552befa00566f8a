"""A minute of real time over loopback sockets at a high rate with faults, on both backends.

The node streams from the sim (about 3000 trades/s over two contracts) while every
5 s the sim injects a fault: malformed and oversize frames, bursts, REST 500/429,
a stall, dropped sockets, expired and revoked tokens, a GatewayLogout. Every 5 s
the process's RSS and task count are sampled; after a 15 s warm-up both must stay
flat (generous bounds: the point is a leak growing with time, not a number). After
the last fault the node must stream again, whatever the breaker decided: five
connection failures in a minute may open it for its 30 s cool-down, which is the
policy working, so the test waits that long. ``PXNODE_SOAK_SECONDS`` shortens or
lengthens it; the figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import os
import time

import anyio
import psutil
import pytest
import sniffio
import trio

from protocols.messages import Flush
from protocols.secrets import Secret
from pxnode.sim import DEMO_ACCOUNT_ID, DEMO_API_KEY, DEMO_USERNAME, Fault, SimConfig, running
from pxnode.testing import ES, MNQ
from supervisors.config import BarsConfig, GatewayConfig, NodeConfig
from supervisors.node import open_node

SOAK = float(os.environ.get("PXNODE_SOAK_SECONDS", "60"))
WARM_UP = min(15.0, SOAK / 4)
FAULTS = [("malformed", 5.0), ("drop", 0.0), ("burst", 1000.0), ("oversize", float(2 << 20)),
          ("rest500", 1.0), ("expire", 0.0), ("malformed", 5.0), ("revoke", 0.0),
          ("burst", 1000.0), ("logout", 0.0), ("stall", 3.0), ("rest429", 1.0)]  # fmt: skip
HEAL = 60.0
"""Seconds the node has to stream again after the last fault (breaker cool-down 30 s)."""
MIB = 1 << 20


def task_count() -> int:
    if sniffio.current_async_library() == "asyncio":
        return len(asyncio.all_tasks())
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, todo = 0, [root]
    while todo:
        task = todo.pop()
        count += 1
        todo.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return count


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_minute_at_3000_trades_a_second_with_faults_stays_flat() -> None:
    sim_config = SimConfig(seed=7, rate=3000.0, contracts=(MNQ, ES))
    process = psutil.Process()
    async with running(sim_config) as sim:
        config = NodeConfig(
            contracts=[MNQ, ES],
            tick_interval=0.25,
            history_bars=0,
            bars=BarsConfig(timeframes=["1sec", "1min"]),
            gateway=GatewayConfig(
                api_url=sim.url,
                market_hub=f"{sim.url}/hubs/market",
                user_hub=f"{sim.url}/hubs/user",
                accounts=[DEMO_ACCOUNT_ID],
                username=DEMO_USERNAME,
                api_key=Secret(DEMO_API_KEY),
            ),
        )
        async with open_node(config) as node:
            validation = node.ref("validation")
            start = time.monotonic()
            samples: list[tuple[float, int, int]] = []
            fault = 0
            while (elapsed := time.monotonic() - start) < SOAK:
                await anyio.sleep(5)
                kind, arg = FAULTS[fault % len(FAULTS)]
                sim.apply(Fault(kind, 0.0, arg))  # type: ignore[arg-type]
                fault += 1
                samples.append((elapsed, process.memory_info().rss, task_count()))
            before: dict[str, int] = await validation.ask(Flush(), timeout=10)
            counters = before
            healing = time.monotonic()
            with anyio.fail_after(HEAL):  # the last fault heals
                while counters["trades_accepted"] - before["trades_accepted"] < 500 * 5:
                    await anyio.sleep(1)
                    counters = await validation.ask(Flush(), timeout=10)
            healed = time.monotonic() - healing
            report = await node.health()
    wall = time.monotonic() - start
    steady = [s for s in samples if s[0] >= WARM_UP]
    rss = [s[1] for s in steady]
    tasks = [s[2] for s in steady]
    accepted = counters["trades_accepted"]
    print(
        f"\nreal-time soak [{sniffio.current_async_library()}]: {wall:.0f} s, {fault} faults, "
        f"{accepted} trades ({accepted / wall:.0f}/s), RSS {rss[0] / MIB:.0f}->{rss[-1] / MIB:.0f} "
        f"MiB (max {max(rss) / MIB:.0f}), tasks {min(tasks)}-{max(tasks)}, "
        f"streaming again {healed:.1f} s after the last fault, "
        f"{report.hubs['market'].reconnects} market hub reconnects"
    )
    assert accepted > 500 * SOAK
    assert sum(v for k, v in sim.counters.items() if k.startswith("fault_")) == fault
    assert max(rss) - rss[0] < 64 * MIB
    assert max(tasks) - min(tasks) <= 20
    assert report.hubs["market"].connected
