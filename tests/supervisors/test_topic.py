"""Topics: one message fanned out to per-subscriber mailboxes, each with its own policy."""

from __future__ import annotations

import anyio
import pytest
import trio
import trio.testing

from supervisors.mailbox import Mailbox, MailboxSpec, OverflowPolicy
from supervisors.topic import Topic

DROP_OLDEST = MailboxSpec(2, OverflowPolicy.DROP_OLDEST)


@pytest.mark.trio
async def test_every_subscriber_gets_every_message_in_order() -> None:
    topic: Topic[int] = Topic("t")
    with topic.subscribe("a") as a, topic.subscribe("b") as b:
        for n in range(5):
            await topic.tell(n)
        assert a.drain(10) == b.drain(10) == [0, 1, 2, 3, 4]
    stats = topic.statistics()
    assert (stats.name, stats.published, stats.unrouted) == ("t", 5, 0)


def test_a_message_nobody_wants_is_unrouted_not_dropped() -> None:
    topic: Topic[int] = Topic("t")
    topic.tell_nowait(1)
    assert topic.statistics().unrouted == 1 and topic.statistics().subscribers == ()


def test_a_slow_conflating_subscriber_loses_only_its_own_oldest_messages() -> None:
    topic: Topic[int] = Topic("t")
    with topic.subscribe("ui", DROP_OLDEST) as ui, topic.subscribe("all", MailboxSpec(10)) as full:
        for n in range(5):
            topic.tell_nowait(n)
        assert ui.drain(10) == [3, 4] and ui.statistics().dropped == 3
        assert full.drain(10) == [0, 1, 2, 3, 4] and full.statistics().dropped == 0


def test_tell_nowait_delivers_to_nobody_while_a_block_subscriber_is_full() -> None:
    topic: Topic[int] = Topic("t")
    with (
        topic.subscribe("block", MailboxSpec(1)) as block,
        topic.subscribe("ui", DROP_OLDEST) as ui,
    ):
        topic.tell_nowait(1)
        with pytest.raises(anyio.WouldBlock):
            topic.tell_nowait(2)
        assert block.drain(5) == [1] and ui.drain(5) == [1]  # never half a fan-out
        assert topic.statistics().published == 1


@pytest.mark.trio
async def test_tell_waits_for_a_full_block_subscriber(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topic: Topic[int] = Topic("t")
    with topic.subscribe("block", MailboxSpec(1)) as block:
        await topic.tell(1)
        async with trio.open_nursery() as nursery:

            async def read_later() -> None:
                await trio.sleep(5)
                assert await block.receive() == 1

            nursery.start_soon(read_later)
            await topic.tell(2)  # backpressure: waits until the reader made room
            assert trio.current_time() == 5
        assert block.drain(5) == [2]


@pytest.mark.trio
async def test_a_block_subscriber_leaving_while_the_publisher_waits_is_just_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An application ends its ``with`` block while the node waits for room in its
    lossless stream: the publisher (bars, validation) went down with MailboxClosed."""
    topic: Topic[int] = Topic("t")
    leaving = topic.subscribe("leaving", MailboxSpec(1))
    with topic.subscribe("others", MailboxSpec(10)) as others:
        await topic.tell(1)
        async with trio.open_nursery() as nursery:

            async def leave_later() -> None:
                await trio.sleep(5)
                leaving.dispose()

            nursery.start_soon(leave_later)
            await topic.tell(2)  # waits for room, then finds the subscriber gone
            await topic.tell(3)
        assert others.drain(5) == [1, 2, 3]
        assert [m.name for m in topic.statistics().subscribers] == ["others"]
        assert topic.statistics().failed == 0  # it left; it was not cut off


@pytest.mark.trio
async def test_a_subscription_made_after_the_topic_closed_ends_at_once() -> None:
    """Every subscription ends when the node stops, one a late task makes too."""
    topic: Topic[int] = Topic("t")
    topic.close()
    with anyio.fail_after(1), topic.subscribe("late") as late:
        assert [n async for n in late] == []
    await topic.tell(1)
    assert topic.statistics().unrouted == 1


def test_select_narrows_or_skips_what_one_subscriber_gets() -> None:
    topic: Topic[int] = Topic("t")
    evens = topic.subscribe("evens", MailboxSpec(10), select=lambda n: n if n % 2 == 0 else None)
    tens = topic.subscribe("tens", MailboxSpec(10), select=lambda n: n * 10)
    with evens, tens:
        for n in range(5):
            topic.tell_nowait(n)
        assert evens.drain(10) == [0, 2, 4] and evens.statistics().dropped == 0
        assert tens.drain(10) == [0, 10, 20, 30, 40]


@pytest.mark.trio
async def test_unsubscribing_stops_delivery_and_closing_the_topic_ends_subscriptions() -> None:
    topic: Topic[int] = Topic("t")
    gone = topic.subscribe("gone")
    stays = topic.subscribe("stays")
    await topic.tell(1)
    gone.close()  # senders' end: what is queued can still be read
    await topic.tell(2)
    assert gone.drain(5) == [1]
    topic.close()
    assert [n async for n in stays] == [1, 2]  # drained, then the end
    gone.dispose()
    assert len(topic.statistics().subscribers) == 0


@pytest.mark.trio
async def test_an_attached_actor_mailbox_is_a_subscriber_owned_by_its_actor() -> None:
    topic: Topic[int] = Topic("t")
    mailbox: Mailbox[int] = Mailbox("actor", MailboxSpec(4))
    topic.attach(mailbox)
    await topic.tell(7)
    assert mailbox.drain(5) == [7]
    mailbox.close()  # the actor stopped: the topic skips its closed mailbox
    await topic.tell(8)
    assert topic.statistics().published == 2
    mailbox.dispose()


@pytest.mark.trio
async def test_a_topic_cannot_be_asked() -> None:
    with pytest.raises(TypeError, match="cannot answer"):
        await Topic[int]("t").ask(1, timeout=1)


@pytest.mark.trio
async def test_a_full_fail_subscriber_is_cut_off_and_hurts_nobody_else() -> None:
    topic: Topic[int] = Topic("t")
    strict = topic.subscribe("strict", MailboxSpec(2, OverflowPolicy.FAIL))
    with topic.subscribe("all", MailboxSpec(10)) as everyone:
        for n in range(4):
            await topic.tell(n)  # the third message finds "strict" full
        topic.tell_nowait(4)
        assert everyone.drain(10) == [0, 1, 2, 3, 4]
    assert [n async for n in strict] == [0, 1]  # what it had, then its stream ends
    stats = topic.statistics()
    assert stats.failed == 1 and stats.published == 5


def test_try_tell_is_false_only_while_a_block_subscriber_is_full() -> None:
    topic: Topic[int] = Topic("t")
    with topic.subscribe("block", MailboxSpec(1)) as block:
        assert topic.try_tell(1) is True
        assert topic.try_tell(2) is False
        assert block.drain(5) == [1]
