"""Explicit broadcast: a topic fans each message out to per-subscriber mailboxes.

Each subscriber chooses its own capacity and overflow policy, so a slow UI
(DROP_OLDEST) never stalls the feed while a recorder (BLOCK) never loses a
message. ``tell`` awaits BLOCK subscribers (backpressure to the publisher);
``tell_nowait`` first checks that every BLOCK subscriber has room and raises
``WouldBlock`` before delivering to anyone otherwise, so a fan-out is never
half done. A FAIL subscriber that is full when a message comes is cut off: its
mailbox closes (it reads what was queued, then its stream ends) and the topic
counts it as ``failed``; the publisher and every other subscriber go on, so one
consumer's policy only ever hurts that consumer. A subscriber that leaves while
a publisher waits for room in its mailbox (an application ending its ``with``
block early) has simply left: the publisher goes on with the others. With no
subscribers a message is simply not wanted (counted as ``unrouted``, not as a
drop). Once the topic is closed (the node stopped), a new subscription is born
ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio

from protocols.errors import MailboxClosed, MailboxFull

from .mailbox import DEFAULT_MAILBOX, Mailbox, MailboxSpec, MailboxStatistics, OverflowPolicy

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TopicStatistics:
    name: str
    published: int
    unrouted: int
    failed: int
    """FAIL subscribers cut off because they were full."""
    subscribers: tuple[MailboxStatistics, ...]


class Topic(Generic[T]):
    def __init__(self, name: str) -> None:
        self._name = name
        self._subscribers: dict[int, Mailbox[T]] = {}
        self._selects: dict[int, Callable[[T], T | None]] = {}  # filtered subscribers only
        self._next_id = 0
        self._published = 0
        self._unrouted = 0
        self._failed = 0
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<Topic {self._name!r} subscribers={len(self._subscribers)}>"

    def subscribe(
        self,
        name: str | None = None,
        spec: MailboxSpec = DEFAULT_MAILBOX,
        select: Callable[[T], T | None] | None = None,
    ) -> Subscription[T]:
        """A new subscription: use it in a ``with`` block, or iterate it to the end.

        ``select`` sees each message first and returns what this subscriber gets
        (the message, a narrowed copy of it) or None (nothing): what a subscriber
        does not want never takes room in its mailbox.
        """
        key = self._next_id
        self._next_id += 1
        mailbox: Mailbox[T] = Mailbox(name or f"{self._name}#{key}", spec)
        if self._closed:
            mailbox.close()  # the node has stopped: nothing will come, the stream just ends
            return Subscription(self, key, mailbox)
        self._subscribers[key] = mailbox
        if select is not None:
            self._selects[key] = select
        return Subscription(self, key, mailbox)

    def _unsubscribe(self, key: int) -> None:
        self._subscribers.pop(key, None)
        self._selects.pop(key, None)

    def close(self) -> None:
        """End every subscription, and any made later: subscribers drain what is queued,
        then see the end."""
        self._closed = True
        for mailbox in self._subscribers.values():
            mailbox.close()

    def attach(self, mailbox: Mailbox[T]) -> None:
        """Subscribe an actor's own mailbox (its owner keeps and closes it)."""
        self._subscribers[self._next_id] = mailbox
        self._next_id += 1

    async def tell(self, msg: T) -> None:
        self._published += 1
        if not self._subscribers:
            self._unrouted += 1
            await anyio.lowlevel.checkpoint()
            return
        for key, mailbox in list(self._subscribers.items()):
            select = self._selects.get(key)
            mine = msg if select is None else select(msg)
            if mine is not None and not mailbox.closed:
                try:
                    await mailbox.send(mine)
                except MailboxFull:
                    self._cut_off(key, mailbox)
                except MailboxClosed:  # it left while we waited for room: nobody to tell
                    self._unsubscribe(key)

    def tell_nowait(self, msg: T) -> None:
        subscribers = self._subscribers
        for mailbox in subscribers.values():
            if mailbox.spec.policy is OverflowPolicy.BLOCK and not mailbox.has_room():
                raise anyio.WouldBlock
        self._published += 1
        if not subscribers:
            self._unrouted += 1
        for key, mailbox in list(subscribers.items()):
            select = self._selects.get(key)
            mine = msg if select is None else select(msg)
            if mine is not None and not mailbox.closed:
                try:
                    mailbox.send_nowait(mine)
                except MailboxFull:
                    self._cut_off(key, mailbox)

    def try_tell(self, msg: T) -> bool:
        """``tell_nowait``, False instead of ``WouldBlock`` (a BLOCK subscriber is full)."""
        try:
            self.tell_nowait(msg)
        except anyio.WouldBlock:
            return False
        return True

    def _cut_off(self, key: int, mailbox: Mailbox[T]) -> None:
        self._failed += 1
        self._unsubscribe(key)
        mailbox.close()

    async def ask(self, msg: Any, timeout: float) -> Any:
        raise TypeError(f"topic {self._name!r} cannot answer an ask")

    def statistics(self) -> TopicStatistics:
        return TopicStatistics(
            name=self._name,
            published=self._published,
            unrouted=self._unrouted,
            failed=self._failed,
            subscribers=tuple(m.statistics() for m in self._subscribers.values()),
        )


class Subscription(Generic[T]):
    """One subscriber's end of a topic: an ``Inbox`` with its own bounded mailbox.

    ``with topic.subscribe(...) as sub:`` unsubscribes at the end of the block;
    iterating ``async for msg in sub`` ends when the topic closes (the node
    stops) and then disposes of itself. ``close()`` is the senders' end, as on
    a mailbox: no more messages arrive, what is queued can still be drained.
    """

    def __init__(self, topic: Topic[T], key: int, mailbox: Mailbox[T]) -> None:
        self._topic = topic
        self._key = key
        self.mailbox = mailbox

    def __repr__(self) -> str:
        return f"<Subscription {self.mailbox.name!r} to {self._topic.name!r}>"

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    def close(self) -> None:
        """Stop receiving; what is already queued can still be drained."""
        self._topic._unsubscribe(self._key)
        self.mailbox.close()

    def dispose(self) -> None:
        """Unsubscribe and close the mailbox for good (idempotent)."""
        self._topic._unsubscribe(self._key)
        self.mailbox.dispose()

    def statistics(self) -> MailboxStatistics:
        return self.mailbox.statistics()

    async def receive(self) -> T:
        return await self.mailbox.receive()

    def receive_nowait(self) -> T:
        return self.mailbox.receive_nowait()

    def drain(self, limit: int) -> list[T]:
        return self.mailbox.drain(limit)

    async def receive_batch(self, limit: int) -> list[T]:
        return await self.mailbox.receive_batch(limit)

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.mailbox.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self.dispose()
            raise StopAsyncIteration from None
