"""Refs: ``try_tell`` never waits and never raises for delivery, whatever the policy."""

from __future__ import annotations

import anyio
import pytest

from protocols.errors import AskTimeout
from supervisors.mailbox import Mailbox, MailboxSpec, OverflowPolicy
from supervisors.ref import MailboxRef, ReplyRef


@pytest.mark.parametrize(
    ("policy", "taken"),
    [
        (OverflowPolicy.BLOCK, False),  # full: the message waits for nobody
        (OverflowPolicy.FAIL, False),
        (OverflowPolicy.DROP_OLDEST, True),  # taken, the oldest dropped and counted
        (OverflowPolicy.DROP_NEWEST, True),  # "taken": dropped as the policy says, counted
    ],
)
def test_try_tell_to_a_full_mailbox(policy: OverflowPolicy, taken: bool) -> None:
    box: Mailbox[int] = Mailbox("m", MailboxSpec(1, policy))
    ref = MailboxRef(box)
    assert ref.try_tell(1) is True
    assert ref.try_tell(2) is taken
    assert box.statistics().dropped == (0 if policy is OverflowPolicy.BLOCK else 1)
    box.dispose()


def test_try_tell_to_a_stopped_actor_is_false() -> None:
    box: Mailbox[int] = Mailbox("m", MailboxSpec(4))
    box.close()
    assert MailboxRef(box).try_tell(1) is False
    box.dispose()


@pytest.mark.anyio
async def test_a_reply_to_an_asker_that_gave_up_is_dropped_quietly() -> None:
    box: Mailbox[object] = Mailbox("slow", MailboxSpec(4))
    with pytest.raises(AskTimeout):
        await MailboxRef(box).ask("question", timeout=0.01)
    request = box.receive_nowait()
    reply = request.reply  # type: ignore[attr-defined]
    assert isinstance(reply, ReplyRef)
    assert reply.try_tell("late answer") is False
    reply.tell_nowait("late answer")  # the same, without the verdict
    box.dispose()


@pytest.mark.anyio
async def test_a_reply_is_taken_once() -> None:
    send, receive = anyio.create_memory_object_stream[object](1)
    with send, receive:
        reply = ReplyRef(send)
        assert reply.try_tell("answer") is True
        assert reply.try_tell("second answer") is False
        assert receive.receive_nowait() == "answer"
