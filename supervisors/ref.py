"""Refs: the only way to reach an actor (``tell``, ``tell_nowait``, ``ask``).

``ask`` wraps the question in a ``Request`` carrying a one-slot reply channel;
the actor answers with ``request.reply.tell_nowait(answer)``. The reply
channel is created and closed by ``ask`` itself, so a reply that comes too late
is dropped harmlessly and a timeout never leaves anything open.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from protocols.errors import AskTimeout, MailboxClosed, MailboxFull
from protocols.messages import Request

from .mailbox import Mailbox

T = TypeVar("T")


class ReplyRef:
    """The one-shot reply side of an ``ask``; extra or late replies are ignored."""

    __slots__ = ("_send",)

    def __init__(self, send: MemoryObjectSendStream[Any]) -> None:
        self._send = send

    @property
    def name(self) -> str:
        return "reply"

    def tell_nowait(self, msg: Any) -> None:
        self.try_tell(msg)

    def try_tell(self, msg: Any) -> bool:
        try:
            self._send.send_nowait(msg)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False  # a second reply, or the asker gave up
        return True

    async def tell(self, msg: Any) -> None:
        self.tell_nowait(msg)
        await anyio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return "<ReplyRef>"


async def ask_via(ref: Any, msg: Any, timeout: float) -> Any:
    """Ask through anything with ``tell``: the shared implementation of ``Ref.ask``."""
    send, recv = anyio.create_memory_object_stream[Any](1)
    with send, recv:
        try:
            with anyio.fail_after(timeout):
                await ref.tell(Request(body=msg, reply=ReplyRef(send)))
                return await recv.receive()
        except TimeoutError:
            raise AskTimeout(
                f"no reply from {ref.name!r} to {type(msg).__name__} within {timeout:g} s"
            ) from None


class MailboxRef(Generic[T]):
    """A ref to one actor's mailbox; cheap to copy, valid across the actor's restarts."""

    __slots__ = ("_mailbox",)

    def __init__(self, mailbox: Mailbox[T]) -> None:
        self._mailbox = mailbox

    @property
    def name(self) -> str:
        return self._mailbox.name

    async def tell(self, msg: T) -> None:
        await self._mailbox.send(msg)

    def tell_nowait(self, msg: T) -> None:
        self._mailbox.send_nowait(msg)

    def try_tell(self, msg: T) -> bool:
        try:
            self._mailbox.send_nowait(msg)
        except (anyio.WouldBlock, MailboxFull, MailboxClosed):
            return False
        return True

    async def ask(self, msg: Any, timeout: float) -> Any:
        return await ask_via(self, msg, timeout)

    def __repr__(self) -> str:
        return f"<Ref {self.name!r}>"
