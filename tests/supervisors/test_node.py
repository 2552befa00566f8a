"""The node tree: built from the table, overridable by name, leaves nothing running."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
import pytest

from protocols.errors import ConfigError, Escalation
from protocols.interfaces import ActorContext, Inbox
from protocols.messages import (
    BarClosed,
    CountersReported,
    Flush,
    GetStats,
    HubMessageReceived,
    MailboxesSampled,
    Request,
    Tick,
)
from supervisors.config import BarsConfig, NodeConfig
from supervisors.mailbox import MailboxSpec, OverflowPolicy
from supervisors.node import open_node


class FakeStats:
    """A test double speaking the stats protocol: records what it is told."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        async for msg in inbox:
            if isinstance(msg, Request) and isinstance(msg.body, GetStats):
                msg.reply.tell_nowait("fake snapshot")
            else:
                self.seen.append(msg)


@pytest.mark.anyio
async def test_node_starts_and_stops_cleanly_on_both_backends() -> None:
    async with open_node(NodeConfig(tick_interval=0.01)) as node:
        assert node.supervisor.child_names() == [
            "stats", "health", "account", "bars", "validation", "clock",
        ]  # fmt: skip
        report = await node.health()
        assert report.score < 1  # no hub is connected in a node without a gateway
        await anyio.sleep(0.05)
        snapshot = await node.stats()
        assert snapshot.uptime_s >= 0
    # Warnings are errors in this suite: an unclosed stream or a leaked task fails the test.


@pytest.mark.trio
async def test_override_replaces_an_actor_by_name(autojump_clock: object) -> None:
    fake = FakeStats()
    async with open_node(NodeConfig(tick_interval=1.0), overrides={"stats": fake}) as node:
        await anyio.sleep(3.5)
        assert await node.ref("stats").ask(GetStats(), timeout=1) == "fake snapshot"
    reports = [m for m in fake.seen if isinstance(m, CountersReported)]
    samples = [m for m in fake.seen if isinstance(m, MailboxesSampled)]
    assert len(samples) == 3  # one per tick at 1, 2, 3 s
    bars = {box.name: box for box in samples[0].mailboxes}["bars"]
    assert (bars.capacity, bars.policy) == (4096, OverflowPolicy.BLOCK)
    assert {r.source for r in reports} == {"bars", "validation", "health", "account"}


@pytest.mark.trio
async def test_override_with_factory_and_unknown_name(autojump_clock: object) -> None:
    with pytest.raises(ConfigError, match="no node child named nope"):
        async with open_node(overrides={"nope": FakeStats()}):
            pass
    made: list[FakeStats] = []

    def factory() -> FakeStats:
        made.append(FakeStats())
        return made[-1]

    async with open_node(NodeConfig(tick_interval=0), overrides={"stats": factory}) as node:
        # tape-driven: a tape's user-hub frames still make an account state
        assert node.supervisor.child_names() == ["stats", "account", "bars", "validation"]
    assert len(made) == 1


@pytest.mark.trio
async def test_supervision_events_are_observable(autojump_clock: object) -> None:
    lives = iter([1.0])

    class CrashOnce:
        async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
            life = next(lives, None)
            if life is not None:
                await anyio.sleep(life)
                raise RuntimeError("first life ends badly")
            async for _ in inbox:
                pass

    async with open_node(NodeConfig(tick_interval=0), overrides={"stats": CrashOnce}) as node:
        with node.topic("topic.events").subscribe(
            "t", MailboxSpec(100, OverflowPolicy.DROP_NEWEST)
        ) as events:
            await anyio.sleep(2)
            seen = [(type(e).__name__, e.child) for e in events.drain(100)]
    assert seen == [
        ("ChildExited", "stats"),
        ("ChildRestarting", "stats"),
        ("ChildStarted", "stats"),
    ]


@pytest.mark.trio
async def test_escalation_leaves_the_block(autojump_clock: object) -> None:
    class Crash:
        async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
            await anyio.sleep(1)
            raise RuntimeError("broken stats")

    with pytest.raises(Escalation, match="more than 10 restarts"):
        async with open_node(overrides={"stats": Crash}):
            await anyio.sleep_forever()


def _trade_frame(contract: str, *items: tuple[str, float, int]) -> msgspec.Raw:
    payload = [
        {"symbolId": "F.US.MNQ", "price": p, "timestamp": ts, "type": 0, "volume": v}
        for ts, p, v in items
    ]
    return msgspec.Raw(msgspec.json.encode([contract, payload]))


@pytest.mark.anyio
async def test_data_path_turns_hub_trades_into_bars_on_both_backends() -> None:
    mnq = "CON.F.US.MNQ.Z25"
    received = datetime(2025, 1, 6, 15, 1, 30, tzinfo=UTC).timestamp()
    config = NodeConfig(tick_interval=0, bars=BarsConfig(timeframes=["1min"]))
    async with open_node(config) as node:
        with node.topic("topic.bars").subscribe(
            "test", MailboxSpec(100, OverflowPolicy.BLOCK)
        ) as bars:
            frame = _trade_frame(
                mnq,
                ("2025-01-06T15:00:10+00:00", 100.0, 1),
                ("2025-01-06T15:00:50+00:00", 101.0, 2),
                ("2025-01-06T15:00:20+00:00", -5.0, 1),  # rejected: price
                ("2025-01-06T15:01:05+00:00", 99.0, 3),
            )
            await node.ref("validation").tell(
                HubMessageReceived("market", "GatewayTrade", frame, received)
            )
            counters = await node.ref("validation").ask(Flush(), timeout=5)
            assert counters["trades_accepted"] == 3
            assert counters["trades_rejected.price"] == 1
            await node.ref("bars").tell(Tick(now=received + 60))
            await node.ref("bars").ask(Flush(), timeout=5)
            closed = [m.bar for m in bars.drain(100) if isinstance(m, BarClosed)]
            frame_df = await node.bars(mnq, "1min", 10)
    assert [(b.start, b.open, b.high, b.low, b.close, b.volume, b.trades) for b in closed] == [
        (1736175600000000, 100.0, 101.0, 100.0, 101.0, 3, 2),
        (1736175660000000, 99.0, 99.0, 99.0, 99.0, 3, 1),
    ]
    assert frame_df["close"].to_list() == [101.0, 99.0]


@pytest.mark.anyio
async def test_streams_have_their_own_policy_and_end_with_the_node() -> None:
    mnq = "CON.F.US.MNQ.Z25"
    received = datetime(2025, 1, 6, 15, 1, 30, tzinfo=UTC).timestamp()
    config = NodeConfig(tick_interval=0, bars=BarsConfig(timeframes=["1min"]))
    got: list[Any] = []

    async def consume(stream: Any) -> None:
        async for msg in stream:  # ends by itself when the node stops
            got.append(msg)

    async with anyio.create_task_group() as tg, open_node(config) as node:
        tg.start_soon(consume, node.stream_trades(capacity=100, policy=OverflowPolicy.BLOCK))
        slow = node.stream_trades(capacity=1)  # conflating: keeps the newest, counts drops
        for second in range(5):
            frame = _trade_frame(mnq, (f"2025-01-06T15:00:1{second}+00:00", 100.0 + second, 1))
            await node.ref("validation").tell(
                HubMessageReceived("market", "GatewayTrade", frame, received)
            )
            await node.ref("validation").ask(Flush(), timeout=5)
        stats = slow.statistics()
        assert (stats.depth, stats.dropped) == (1, 4)
        slow.dispose()
        with node.stream_bars() as bars:
            assert bars.statistics().policy is OverflowPolicy.DROP_OLDEST
    assert [t.price for m in got for t in m.trades] == [100.0, 101.0, 102.0, 103.0, 104.0]
