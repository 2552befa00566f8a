"""A simulated week of chaos against one node, on virtual time, judged against the sim's truth.

A seeded scenario runner fires the sim's faults at random moments of a trading
week: dropped sockets, stalls, malformed and oversize frames, expired and revoked
tokens, GatewayLogout, REST 429/500, bursts, slow writes, and whole gateway
outages (every dial refused for minutes, so the hubs' breakers open). A slow
consumer that never reads hangs on ``stream_bars`` throughout. Afterwards:

* every bar the node holds equals the aggregation of the sim's own record of
  what it traded in that bar (history back-fill covers every gap: nothing lost,
  nothing counted twice);
* every fault shows in the node's statistics or events, the breakers went through
  open and half-open back to closed, and mailboxes, rings and tasks stayed bounded.

``PXNODE_CHAOS_SEED=N`` replays one scenario exactly; a failing run prints its seed.
The seed drives the market, the faults and trio's scheduling order, and the
week always starts at ``EPOCH`` (unix time is pinned there), so the same faults
hit the same bars on every run.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import anyio
import msgspec
import pytest
import trio

from actors.connection import HubTimings
from actors.health import HealthConfig
from protocols.hubs import Connected, Disconnected
from protocols.messages import BreakerTransitioned, ChildRestarting
from protocols.timeframes import BarClock, parse_timeframe
from pxnode.sim import Fault, SimConfig
from pxnode.sim.faults import FaultKind
from pxnode.testing import ES, HOSTS, MNQ, SimNode, node_config, node_tasks, sim_node
from supervisors.config import BarsConfig
from supervisors.mailbox import OverflowPolicy
from tests.sim_record import Quiet, truth

DAY = 86_400.0
WEEK = 7 * DAY
SOAK = float(os.environ.get("PXNODE_CHAOS_SECONDS", WEEK))
SEED = int(os.environ.get("PXNODE_CHAOS_SEED", "20261203"))
EPOCH = 1_796_652_000.0  # Monday 2026-12-07 14:00 UTC (08:00 in Chicago)
FRAMES = ["1min", "1hr", "4hr", "1day"]
CHECKED = ["1hr", "4hr", "1day"]  # their rings hold the whole week

CALM = 900.0

# kind -> (weight, argument drawn from the scenario's generator)
FAULTS: dict[str, tuple[int, Any]] = {
    "drop": (6, lambda r: 0.0),
    "stall": (4, lambda r: r.uniform(125, 240)),  # beyond the 120 s server timeout
    "malformed": (4, lambda r: float(r.randint(1, 20))),
    "oversize": (2, lambda r: 0.0),
    "expire": (3, lambda r: 0.0),
    "revoke": (2, lambda r: 0.0),
    "logout": (2, lambda r: 0.0),
    "rest429": (3, lambda r: float(r.randint(1, 5))),
    "rest500": (3, lambda r: float(r.randint(1, 3))),
    "slow": (2, lambda r: r.uniform(1, 10)),
    "burst": (2, lambda r: float(r.randint(100, 2000))),
    "outage": (3, lambda r: r.uniform(60, 480)),  # the gateway is down: dials refused
}


def scenario(seed: int, length: float) -> list[tuple[float, str, float]]:
    """(when, kind, argument) for the whole run: about one fault an hour, and none in
    the ``CALM`` after a stall or an outage ends. Gateway silence in the breakers'
    last cool-down (up to 5 min) would fail their last probe, and by design they then
    give up: the node escalates and stops."""
    rng = random.Random(seed)
    kinds = list(FAULTS)
    weights = [FAULTS[k][0] for k in kinds]
    plan: list[tuple[float, str, float]] = []
    at = 600.0
    while True:
        at += rng.expovariate(1 / 3600)
        if at >= length - 3600:  # the last hour is calm: everything settles
            break
        kind = rng.choices(kinds, weights)[0]
        plan.append((at, kind, arg := FAULTS[kind][1](rng)))
        if kind in ("outage", "stall"):
            at += arg + CALM  # an outage hard on another's heels exhausts the breakers
    for kind in kinds:  # every kind at least once, however short the run
        if all(k != kind for _, k, _ in plan):
            plan.append((rng.uniform(600, length - 3600), kind, FAULTS[kind][1](rng)))
    return sorted(plan)


async def run_scenario(h: SimNode, plan: list[tuple[float, str, float]]) -> Counter[str]:
    fired: Counter[str] = Counter()
    start = anyio.current_time()
    for at, kind, arg in plan:
        await anyio.sleep_until(start + at)
        fired[kind] += 1
        if kind == "outage":
            h.sim.apply(Fault("drop", 0.0))
            h.net.refused.update(HOSTS.values())
            await anyio.sleep(arg)
            h.net.refused.clear()
        else:
            h.sim.apply(Fault(cast(FaultKind, kind), 0.0, arg))
    return fired


@pytest.fixture
def seeded_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Unix time starts at EPOCH; trio's scheduler shuffles with the scenario's seed
    (its generator is handed back as it was, like the patched clock)."""
    real = time.monotonic()
    monkeypatch.setattr(time, "time", lambda: EPOCH + time.monotonic() - real)
    shuffler = trio._core._run._r
    state = shuffler.getstate()
    shuffler.seed(SEED)
    yield
    shuffler.setstate(state)


@pytest.mark.trio
async def test_a_simulated_week_of_chaos_loses_and_doubles_nothing(
    autojump_clock: Any, seeded_world: None
) -> None:
    print(f"chaos seed {SEED} over {SOAK / DAY:g} simulated days (PXNODE_CHAOS_SEED reproduces it)")
    wall = time.monotonic()
    plan = scenario(SEED, SOAK)
    config = msgspec.structs.replace(
        node_config(
            tick_interval=60.0,
            hub_timings=HubTimings(
                keepalive_interval=60.0, server_timeout=120.0, report_interval=60.0
            ),
            # a quiet market (a trade every ~100 s a contract) is not a stale feed
            health=HealthConfig(stale_after=900.0, report_interval=60.0),
        ),
        contracts=[MNQ, ES],
        history_bars=30,
        bars=BarsConfig(timeframes=FRAMES, ring_size=1000),
    )
    sim = SimConfig(
        seed=SEED,
        rate=0.02,
        contracts=(MNQ, ES),
        tick=3.0,  # a trade is published at most 3 s late, inside the back-fill cut
        ping_interval=60.0,
        client_timeout=120.0,
        history_hours=SOAK / 3600 + 24,
    )
    async with sim_node(config=config, sim=sim) as h:
        node = h.node
        await node.ready(timeout=600)
        slow = node.stream_bars(capacity=8, policy=OverflowPolicy.DROP_OLDEST)  # never read
        peak_tasks = 0
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal peak_tasks
                while True:
                    await anyio.sleep(3600)
                    peak_tasks = max(peak_tasks, len(node_tasks()))

            tg.start_soon(watch)
            fired = await run_scenario(h, plan)
            await anyio.sleep_until(h.sim.sim.start + SOAK - h.wall() + anyio.current_time())
            await node.ready(timeout=600)  # connected, every gap back-filled
            # Shorter than the hubs' server timeout: no reconnect, no back-fill.
            quiet = Quiet(h, 25.0, (MNQ, ES))
            await anyio.sleep(5)
            tg.cancel_scope.cancel()
        stats = await node.stats()
        report = await node.health()
        mismatched = []
        checked = 0
        for contract in (MNQ, ES):
            for name in CHECKED:
                frame = await node.bars(contract, name, 1000)
                for bar in frame.iter_rows(named=True):
                    start = round(bar["start"].timestamp() * 1_000_000)
                    end = BarClock(parse_timeframe(name)).bounds(start)[1]
                    ours = tuple(bar[k] for k in ("open", "high", "low", "close", "volume"))
                    checked += 1
                    expected = truth(h, contract, start, end, quiet)
                    if ours != expected:
                        mismatched.append((contract, name, str(bar["start"]), ours, expected))
        slow_stats = slow.statistics()
        slow.dispose()
    events = h.events.take()
    transitions = {(e.old, e.new) for e in events if isinstance(e, BreakerTransitioned)}
    print(
        f"faults {dict(fired)}; bars checked {checked}; wall {time.monotonic() - wall:.1f} s; "
        f"reconnects {sum(isinstance(e, Connected) for e in events)}; peak tasks {peak_tasks}; "
        f"slow consumer dropped {slow_stats.dropped}; "
        f"{ {k: v for k, v in stats.counters.items() if v and ('rejected' in k or 'bars.' in k)} }"
    )
    assert not mismatched, f"seed {SEED}: {mismatched[:5]}"
    assert checked >= 2 * (SOAK / 3600)  # every hour of the run, both contracts
    assert sum(fired.values()) == len(plan) and set(fired) == set(FAULTS)
    # every fault left a trace
    counters = stats.counters
    assert counters["validation.frames_malformed"] > 0
    # every expiry, revocation and logout cost a token: the node logged in again each time
    assert len(h.net.tokens) > fired["expire"] + fired["revoke"] + fired["logout"]
    assert sum(isinstance(e, Disconnected) for e in events) >= fired["drop"]
    assert ("closed", "open") in transitions and ("open", "half_open") in transitions
    assert ("half_open", "closed") in transitions
    assert report.hubs["market"].breaker == "closed" and report.healthy
    assert sum(isinstance(e, ChildRestarting) for e in events) > 0
    # bounded: the slow consumer lost only its own oldest bars; mailboxes never past capacity
    assert slow_stats.depth <= 8 and slow_stats.dropped > 0
    assert all(box.depth <= box.capacity for box in stats.mailboxes.values())
    assert 0 < peak_tasks < 200 and h.left_running == []
