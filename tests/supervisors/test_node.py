"""The node tree: built from the table, overridable by name, leaves nothing running."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from protocols.errors import ConfigError, Escalation
from protocols.interfaces import ActorContext, Inbox
from protocols.messages import CountersReported, GetStats, Request
from supervisors.config import NodeConfig
from supervisors.mailbox import MailboxSpec, OverflowPolicy
from supervisors.node import NODE_CHILDREN, open_node


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


def test_table_lists_the_node_children_in_start_order() -> None:
    assert [row.name for row in NODE_CHILDREN] == ["stats", "bars", "validation", "clock"]


@pytest.mark.anyio
async def test_node_starts_and_stops_cleanly_on_both_backends() -> None:
    async with open_node(NodeConfig(tick_interval=0.01)) as node:
        assert node.supervisor.child_names() == ["stats", "bars", "validation", "clock"]
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
    mailboxes = [r for r in reports if r.source == "mailboxes"]
    assert len(mailboxes) == 3  # one per tick at 1, 2, 3 s
    assert mailboxes[0].gauges["bars.capacity"] == 4096
    assert {r.source for r in reports} == {"mailboxes", "bars", "validation"}


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
        assert node.supervisor.child_names() == ["stats", "bars", "validation"]
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
