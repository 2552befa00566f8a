"""Explicit broadcast: a topic fans each message out to per-subscriber mailboxes.

Each subscriber chooses its own capacity and overflow policy, so a slow UI
(DROP_OLDEST) never stalls the feed while a recorder (BLOCK) never loses a
message. ``tell`` awaits BLOCK subscribers (backpressure to the publisher);
``tell_nowait`` first checks that every BLOCK subscriber has room and raises
``WouldBlock`` before delivering to anyone otherwise, so a fan-out is never
half done. With no subscribers a message is simply not wanted (counted as
``unrouted``, not as a drop).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio

from .mailbox import DEFAULT_MAILBOX, Mailbox, MailboxSpec, MailboxStatistics, OverflowPolicy

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TopicStatistics:
    name: str
    published: int
    unrouted: int
    subscribers: tuple[MailboxStatistics, ...]


class Topic(Generic[T]):
    def __init__(self, name: str) -> None:
        self._name = name
        self._subscribers: dict[int, Mailbox[T]] = {}
        self._next_id = 0
        self._published = 0
        self._unrouted = 0

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<Topic {self._name!r} subscribers={len(self._subscribers)}>"

    @contextmanager
    def subscribe(
        self, name: str | None = None, spec: MailboxSpec = DEFAULT_MAILBOX
    ) -> Iterator[Mailbox[T]]:
        """Subscribe for the duration of the ``with`` block; the mailbox is the inbox."""
        key = self._next_id
        self._next_id += 1
        mailbox: Mailbox[T] = Mailbox(name or f"{self._name}#{key}", spec)
        self._subscribers[key] = mailbox
        try:
            yield mailbox
        finally:
            del self._subscribers[key]
            mailbox.dispose()

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
        for mailbox in list(self._subscribers.values()):
            if not mailbox.closed:
                await mailbox.send(msg)

    def tell_nowait(self, msg: T) -> None:
        subscribers = self._subscribers.values()
        for mailbox in subscribers:
            if mailbox.spec.policy is OverflowPolicy.BLOCK and not mailbox.has_room():
                raise anyio.WouldBlock
        self._published += 1
        if not subscribers:
            self._unrouted += 1
        for mailbox in subscribers:
            if not mailbox.closed:
                mailbox.send_nowait(msg)

    async def ask(self, msg: Any, timeout: float) -> Any:
        raise TypeError(f"topic {self._name!r} cannot answer an ask")

    def statistics(self) -> TopicStatistics:
        return TopicStatistics(
            name=self._name,
            published=self._published,
            unrouted=self._unrouted,
            subscribers=tuple(m.statistics() for m in self._subscribers.values()),
        )
