"""Doubles for testing one actor alone: a ref that records, a context, inboxes.

An actor sees only the ``protocols.interfaces`` shapes (Inbox, Ref,
ActorContext), so these plain objects are enough to run its ``run`` method
with no runtime around it. Subclass ``RecordingRef`` for a ref that answers
asks (an auth double that hands out tokens, for example).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from protocols.errors import MailboxClosed, MailboxFull
from protocols.messages import GetToken, RefreshToken, TokenIssued
from protocols.secrets import Secret

_UNDELIVERED = (
    anyio.WouldBlock,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    MailboxFull,
    MailboxClosed,
)


class RecordingRef:
    """Records every message told to it, in order, in ``told``.

    ``full=True`` makes ``tell_nowait`` raise ``anyio.WouldBlock`` (a full BLOCK
    mailbox); ``fail`` is raised by every tell instead, when set.
    """

    def __init__(self, name: str, *, full: bool = False) -> None:
        self._name = name
        self.told: list[Any] = []
        self.full = full
        self.fail: BaseException | None = None
        self._changed: anyio.Event | None = None

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<RecordingRef {self._name} told={len(self.told)}>"

    def tell_nowait(self, msg: Any) -> None:
        if self.fail is not None:
            raise self.fail
        if self.full:
            raise anyio.WouldBlock
        self.told.append(msg)
        if self._changed is not None:
            self._changed.set()

    async def tell(self, msg: Any) -> None:
        if self.fail is not None:
            raise self.fail
        self.told.append(msg)
        if self._changed is not None:
            self._changed.set()
        await anyio.lowlevel.checkpoint()

    def try_tell(self, msg: Any) -> bool:
        """``tell_nowait`` under the ``Ref.try_tell`` contract: False when full or when
        ``fail`` is a delivery error; any other ``fail`` (a bug) still raises."""
        try:
            self.tell_nowait(msg)
        except _UNDELIVERED:
            return False
        return True

    async def ask(self, msg: Any, timeout: float) -> Any:
        raise TypeError(f"{self._name} is not asked ({type(msg).__name__})")

    def of(self, kind: type) -> list[Any]:
        """What was told of one message type."""
        return [m for m in self.told if isinstance(m, kind)]

    async def wait_for(self, n: int) -> None:
        """Sleep until at least ``n`` messages have been told."""
        while len(self.told) < n:
            self._changed = anyio.Event()
            await self._changed.wait()


class FakeAuth(RecordingRef):
    """An auth actor for one REST caller: ``GetToken`` gets ``mint()``'s token (valid for an
    hour of ``FakeContext``'s default wall time), and a ``RefreshToken`` mints the next.

    ``reply``, when set, answers instead of a token (an exception is raised);
    ``asks`` counts the ``GetToken`` asks.
    """

    def __init__(self, mint: Callable[[], str] | None = None) -> None:
        super().__init__("auth")
        self.mint = mint or iter(f"tok-SECRET-{n}" for n in range(1, 100)).__next__
        self.token = self.mint()
        self.asks = 0
        self.reply: Any = None

    def tell_nowait(self, msg: Any) -> None:
        super().tell_nowait(msg)
        if isinstance(msg, RefreshToken):
            self.token = self.mint()

    async def tell(self, msg: Any) -> None:
        self.tell_nowait(msg)
        await anyio.lowlevel.checkpoint()

    async def ask(self, msg: Any, timeout: float) -> Any:
        assert isinstance(msg, GetToken)
        self.asks += 1
        await anyio.lowlevel.checkpoint()
        if isinstance(self.reply, BaseException):
            raise self.reply
        expires = EPOCH + anyio.current_time() + 3600
        return self.reply or TokenIssued(token=Secret(self.token), expires_at=expires)


class FakeContext:
    """An ``ActorContext``: named refs, a wall clock, a count of healthy reports.

    ``refs`` are the actors and topics the actor may reach; names not listed
    raise ``KeyError`` like the registry does, unless ``record_all`` makes a
    ``RecordingRef`` for every name asked for. ``wall`` is unix time (default: a
    fixed epoch plus ``anyio.current_time()``, so virtual clocks apply).
    """

    def __init__(
        self,
        name: str = "actor",
        refs: Iterable[Any] | None = None,
        *,
        wall: Callable[[], float] | None = None,
        record_all: bool = False,
    ) -> None:
        self._name = name
        self.refs: dict[str, Any] = {ref.name: ref for ref in refs or ()}
        self._wall = wall or (lambda: EPOCH + anyio.current_time())
        self._record_all = record_all
        self.healthy = 0

    @property
    def name(self) -> str:
        return self._name

    def ref(self, name: str) -> Any:
        if name not in self.refs and self._record_all:
            self.refs[name] = RecordingRef(name)
        return self.refs[name]

    def told(self, name: str) -> list[Any]:
        """What the actor told ``name`` so far."""
        return list(self.refs[name].told)

    def wall_time(self) -> float:
        return self._wall()

    def report_healthy(self) -> None:
        self.healthy += 1


EPOCH = 1_764_000_000.0
"""The default wall time at virtual time zero (2025-11-24T16:00:00Z)."""


class ScriptedInbox:
    """Hands out the given batches, then reports the mailbox closed (an empty batch)."""

    def __init__(self, *batches: Sequence[Any]) -> None:
        self.batches = [list(batch) for batch in batches]
        self.limits: list[int] = []

    async def receive_batch(self, limit: int) -> list[Any]:
        await anyio.lowlevel.checkpoint()
        self.limits.append(limit)
        return self.batches.pop(0) if self.batches else []

    async def receive(self) -> Any:
        while self.batches and not self.batches[0]:
            self.batches.pop(0)
        if not self.batches:
            raise anyio.EndOfStream
        await anyio.lowlevel.checkpoint()
        return self.batches[0].pop(0)

    def receive_nowait(self) -> Any:
        while self.batches and not self.batches[0]:
            self.batches.pop(0)
        if not self.batches:
            raise anyio.EndOfStream
        return self.batches[0].pop(0)

    def drain(self, limit: int) -> list[Any]:
        out: list[Any] = []
        while self.batches and len(out) < limit:
            batch = self.batches[0]
            take = batch[: limit - len(out)]
            del batch[: len(take)]
            out += take
            if not batch:
                self.batches.pop(0)
        return out

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self.receive()
            except anyio.EndOfStream:
                return


class MemoryInbox:
    """The Inbox protocol over an anyio memory stream that a test feeds with ``send``."""

    def __init__(self, size: int = 1024) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[Any](size)

    async def send(self, msg: Any) -> None:
        await self._send.send(msg)

    def send_nowait(self, msg: Any) -> None:
        self._send.send_nowait(msg)

    async def receive(self) -> Any:
        return await self._receive.receive()

    def receive_nowait(self) -> Any:
        return self._receive.receive_nowait()

    def drain(self, limit: int) -> list[Any]:
        out: list[Any] = []
        while len(out) < limit:
            try:
                out.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        return out

    async def receive_batch(self, limit: int) -> list[Any]:
        try:
            first = await self._receive.receive()
        except anyio.EndOfStream:
            return []
        return [first, *self.drain(limit - 1)]

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._receive.__aiter__()

    def close_sending(self) -> None:
        """No more messages: the actor sees its inbox end once it has read what is queued."""
        self._send.close()

    def close(self) -> None:
        self._send.close()
        self._receive.close()
