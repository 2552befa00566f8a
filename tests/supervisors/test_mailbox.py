from __future__ import annotations

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import AskTimeout, ConfigError, MailboxClosed, MailboxFull
from protocols.messages import Request
from supervisors.mailbox import Mailbox, MailboxSpec, OverflowPolicy
from supervisors.ref import MailboxRef
from supervisors.topic import Topic


def make(policy: OverflowPolicy, capacity: int = 3) -> Mailbox[int]:
    return Mailbox("m", MailboxSpec(capacity, policy))


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        MailboxSpec(0)


@pytest.mark.trio
async def test_drop_oldest_keeps_newest_and_counts() -> None:
    box = make(OverflowPolicy.DROP_OLDEST)
    for i in range(10):
        box.send_nowait(i)
    assert box.drain(100) == [7, 8, 9]
    s = box.statistics()
    assert (s.told, s.dropped, s.depth) == (10, 7, 0)
    box.dispose()


@pytest.mark.trio
async def test_drop_newest_keeps_oldest_and_counts() -> None:
    box = make(OverflowPolicy.DROP_NEWEST)
    for i in range(10):
        await box.send(i)
    assert box.drain(100) == [0, 1, 2]
    assert (box.statistics().told, box.statistics().dropped) == (3, 7)
    box.dispose()


@pytest.mark.trio
async def test_fail_raises_and_counts() -> None:
    box = make(OverflowPolicy.FAIL, capacity=1)
    box.send_nowait(1)
    with pytest.raises(MailboxFull):
        box.send_nowait(2)
    with pytest.raises(MailboxFull):
        await box.send(3)
    assert box.statistics().dropped == 2
    box.dispose()


@pytest.mark.trio
async def test_block_waits_for_room(autojump_clock: object) -> None:
    box = make(OverflowPolicy.BLOCK, capacity=1)
    box.send_nowait(1)
    with pytest.raises(anyio.WouldBlock):
        box.send_nowait(2)
    sent_at: list[float] = []

    async def producer() -> None:
        await box.send(2)
        sent_at.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await anyio.sleep(10)
        assert sent_at == []  # still blocked: backpressure, nothing dropped
        assert await box.receive() == 1
    assert sent_at == [10.0]
    assert box.drain(10) == [2]
    assert box.statistics().dropped == 0
    box.dispose()


@pytest.mark.trio
async def test_receive_batch_and_close_semantics() -> None:
    box = make(OverflowPolicy.BLOCK, capacity=8)
    for i in range(5):
        box.send_nowait(i)
    assert await box.receive_batch(3) == [0, 1, 2]
    box.close()
    with pytest.raises(MailboxClosed):
        box.send_nowait(9)
    with pytest.raises(MailboxClosed):
        await box.send(9)
    assert await box.receive_batch(10) == [3, 4]  # what was queued is still delivered
    assert await box.receive_batch(10) == []  # then the end
    assert box.statistics().closed
    box.dispose()


@pytest.mark.trio
async def test_ask_round_trip_and_timeout(autojump_clock: object) -> None:
    box: Mailbox[object] = Mailbox("echo", MailboxSpec(4))
    ref = MailboxRef(box)

    async def echo_once() -> None:
        req = await box.receive()
        assert isinstance(req, Request)
        req.reply.tell_nowait(("pong", req.body))
        req.reply.tell_nowait("a second reply is ignored")

    async with anyio.create_task_group() as tg:
        tg.start_soon(echo_once)
        assert await ref.ask("ping", timeout=1) == ("pong", "ping")

    start = anyio.current_time()
    with pytest.raises(AskTimeout, match="no reply from 'echo' to str within 2 s"):
        await ref.ask("nobody answers", timeout=2)
    assert anyio.current_time() - start == pytest.approx(2)
    late = box.receive_nowait()
    assert isinstance(late, Request)
    late.reply.tell_nowait("too late")  # harmless: the asker has gone
    box.dispose()


@pytest.mark.trio
async def test_topic_fans_out_with_per_subscriber_policy() -> None:
    topic: Topic[int] = Topic("t")
    await topic.tell(0)  # nobody listens: unrouted, not a drop
    with (
        topic.subscribe("slow-ui", MailboxSpec(2, OverflowPolicy.DROP_OLDEST)) as ui,
        topic.subscribe("recorder", MailboxSpec(10, OverflowPolicy.BLOCK)) as rec,
    ):
        for i in range(1, 6):
            topic.tell_nowait(i)
        assert ui.drain(10) == [4, 5]
        assert rec.drain(10) == [1, 2, 3, 4, 5]
        stats = topic.statistics()
        assert stats.published == 6 and stats.unrouted == 1
        assert {s.name: s.dropped for s in stats.subscribers} == {"slow-ui": 3, "recorder": 0}
    assert topic.statistics().subscribers == ()


@pytest.mark.trio
async def test_topic_nowait_never_half_delivers() -> None:
    topic: Topic[int] = Topic("t")
    with (
        topic.subscribe("a", MailboxSpec(5, OverflowPolicy.DROP_NEWEST)) as a,
        topic.subscribe("b", MailboxSpec(1, OverflowPolicy.BLOCK)) as b,
    ):
        topic.tell_nowait(1)
        with pytest.raises(anyio.WouldBlock):
            topic.tell_nowait(2)
        assert a.drain(10) == [1] and b.drain(10) == [1]
    with pytest.raises(TypeError):
        await topic.ask(1, timeout=1)


# ------------------------------------------------------------------ invariants

# A mailbox script: ("send", n) offers message n with send_nowait, ("drain", k) takes up to k.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 10**6)),
        st.tuples(st.just("drain"), st.integers(1, 5)),
    ),
    max_size=60,
)
policies = st.sampled_from(
    [OverflowPolicy.DROP_OLDEST, OverflowPolicy.DROP_NEWEST, OverflowPolicy.FAIL]
)


@given(steps, policies, st.integers(1, 6))
def test_every_message_is_delivered_once_in_order_or_counted_as_dropped(
    script: list[tuple[str, int]], policy: OverflowPolicy, capacity: int
) -> None:
    """Bounded, FIFO, and every message offered is either received or counted: the
    policy decides only *which* are dropped (DROP_OLDEST the oldest queued,
    DROP_NEWEST and FAIL the one offered), never how many go missing uncounted."""
    box: Mailbox[int] = Mailbox("m", MailboxSpec(capacity, policy))
    model: list[int] = []  # what should be queued, oldest first
    offered = received = dropped = refused = 0
    for op, value in script:
        if op == "send":
            offered += 1
            if len(model) < capacity:
                model.append(value)
            elif policy is OverflowPolicy.DROP_OLDEST:
                model = [*model[1:], value]
                dropped += 1
            else:
                dropped += 1
                refused += 1
            try:
                box.send_nowait(value)
            except MailboxFull:
                assert policy is OverflowPolicy.FAIL
        else:
            got = box.drain(value)
            assert got == model[:value]
            model = model[value:]
            received += len(got)
        stats = box.statistics()
        assert stats.depth == len(model) <= capacity
        assert stats.dropped == dropped
        assert stats.told == offered - refused  # queued at the time it was offered
        assert offered == received + len(model) + dropped
    box.dispose()


@given(steps, st.integers(1, 6))
def test_a_block_mailbox_never_drops_and_refuses_when_full(
    script: list[tuple[str, int]], capacity: int
) -> None:
    box: Mailbox[int] = Mailbox("m", MailboxSpec(capacity, OverflowPolicy.BLOCK))
    model: list[int] = []
    for op, value in script:
        if op == "send":
            try:
                box.send_nowait(value)
                model.append(value)
            except anyio.WouldBlock:
                assert len(model) == capacity  # full: the sender must wait, nothing is lost
        else:
            assert box.drain(value) == model[:value]
            model = model[value:]
        assert box.statistics().dropped == 0 and box.statistics().depth == len(model)
    box.dispose()
