"""Bounded mailboxes with explicit overflow policies.

Theory of operation
-------------------
A mailbox is one bounded anyio memory stream. The actor owns the receiving
half (it is the actor's ``Inbox``); any number of refs send into it. When the
buffer is full the mailbox's policy decides, and the decision is counted:

========== ==================================================================
BLOCK      ``send`` waits (backpressure); ``send_nowait`` raises WouldBlock
DROP_OLDEST the oldest queued message is dropped to make room (conflation)
DROP_NEWEST the message being sent is dropped
FAIL       ``MailboxFull`` is raised to the sender
========== ==================================================================

Invariants: ``depth <= capacity`` always; every message offered is either
queued (``told``) or counted in ``dropped`` (or raised to its sender for FAIL /
BLOCK-nowait). Closing the mailbox (``close``) ends the senders' side: the
actor still drains what is queued, then its ``receive`` raises EndOfStream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from protocols.errors import ConfigError, MailboxClosed, MailboxFull
from protocols.mailboxes import MailboxStatistics as MailboxStatistics
from protocols.mailboxes import OverflowPolicy as OverflowPolicy

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MailboxSpec:
    capacity: int = 1024
    policy: OverflowPolicy = OverflowPolicy.BLOCK

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ConfigError(f"mailbox capacity must be >= 1, got {self.capacity}")


DEFAULT_MAILBOX = MailboxSpec()


class Mailbox(Generic[T]):
    """One actor's bounded mailbox: the sending API for refs, the Inbox API for the actor."""

    def __init__(self, name: str, spec: MailboxSpec = MailboxSpec()) -> None:
        self.name = name
        self.spec = spec
        self._send: MemoryObjectSendStream[T]
        self._recv: MemoryObjectReceiveStream[T]
        self._send, self._recv = anyio.create_memory_object_stream[T](spec.capacity)
        self._told = 0
        self._dropped = 0
        self._closed = False

    def __repr__(self) -> str:
        s = self.statistics()
        depth = f"{s.depth}/{s.capacity}"
        return f"<Mailbox {self.name!r} {s.policy.value} {depth} dropped={s.dropped}>"

    # ---------------------------------------------------------------- senders

    async def send(self, msg: T) -> None:
        """Apply the policy; only a full BLOCK mailbox makes the sender wait.

        When there is room the message is queued without a schedule point (a
        cancellation is still honoured): the receiver runs when the sender next
        waits, and then drains everything queued in one batch. That is the whole
        difference between ~8 µs and ~0.4 µs per message on the hot paths.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self.spec.policy is OverflowPolicy.BLOCK:
            try:
                self._send.send_nowait(msg)
            except anyio.WouldBlock:
                try:
                    await self._send.send(msg)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    raise MailboxClosed(f"mailbox {self.name!r} is closed") from None
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                raise MailboxClosed(f"mailbox {self.name!r} is closed") from None
            self._told += 1
        else:
            self.send_nowait(msg)

    def send_nowait(self, msg: T) -> None:
        send = self._send
        try:
            send.send_nowait(msg)
        except anyio.WouldBlock:
            policy = self.spec.policy
            if policy is OverflowPolicy.DROP_OLDEST:
                self._recv.receive_nowait()
                self._dropped += 1
                send.send_nowait(msg)
            elif policy is OverflowPolicy.DROP_NEWEST:
                self._dropped += 1
                return
            elif policy is OverflowPolicy.FAIL:
                self._dropped += 1
                raise MailboxFull(f"mailbox {self.name!r} is full ({self.spec.capacity})") from None
            else:
                raise
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise MailboxClosed(f"mailbox {self.name!r} is closed") from None
        self._told += 1

    def has_room(self) -> bool:
        return self._recv.statistics().current_buffer_used < self.spec.capacity

    # ------------------------------------------------------------ the inbox

    async def receive(self) -> T:
        return await self._recv.receive()

    def receive_nowait(self) -> T:
        return self._recv.receive_nowait()

    def drain(self, limit: int) -> list[T]:
        out: list[T] = []
        receive_nowait = self._recv.receive_nowait
        try:
            while len(out) < limit:
                out.append(receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            pass
        return out

    async def receive_batch(self, limit: int) -> list[T]:
        try:
            first = await self._recv.receive()
        except anyio.EndOfStream:
            return []
        batch = [first]
        if limit > 1:
            batch.extend(self.drain(limit - 1))
        return batch

    def __aiter__(self) -> AsyncIterator[T]:
        return self._recv.__aiter__()

    # -------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """End the senders' side; the actor drains what is queued, then sees the end."""
        self._closed = True
        self._send.close()

    def dispose(self) -> None:
        """Close both halves (after the actor is gone); queued messages are discarded."""
        self._closed = True
        self._send.close()
        self._recv.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> MailboxStatistics:
        stats = self._recv.statistics()
        return MailboxStatistics(
            name=self.name,
            policy=self.spec.policy,
            capacity=self.spec.capacity,
            depth=stats.current_buffer_used,
            told=self._told,
            dropped=self._dropped,
            closed=self.closed,
        )
