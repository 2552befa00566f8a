"""The interfaces an actor sees: its inbox, the refs it talks to, its context.

Actors import only ``protocols``; the runtime in ``supervisors`` implements these
Protocols. That keeps the floors clean (no actor knows the runtime) and lets a
test hand an actor any object with the same shape.

Theory of operation
-------------------
An actor is an object with ``async def run(self, inbox, ctx)``. It owns all of
its state; the only way in is a message in its inbox, the only way out is a
message told to a ``Ref`` found through ``ctx.ref(name)``: a sibling actor, or a
topic (``ctx.ref("topic.bars")``) that fans it out to its subscribers. Returning
from ``run`` is a normal exit; raising is a failure the supervisor acts on;
being cancelled is never a failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVar, runtime_checkable

import anyio

Tntra = TypeVar("Tntra", contravariant=True)
T = TypeVar("T")


@runtime_checkable
class Inbox(Protocol[T]):
    """The receiving end of an actor's bounded mailbox."""

    async def receive(self) -> T:
        """Wait for the next message; raises ``anyio.EndOfStream`` once closed and empty."""
        ...

    def receive_nowait(self) -> T:
        """The next message or ``anyio.WouldBlock``."""
        ...

    def drain(self, limit: int) -> list[T]:
        """Up to ``limit`` already-queued messages without awaiting (hot-path batches)."""
        ...

    async def receive_batch(self, limit: int) -> list[T]:
        """Wait for at least one message, then drain up to ``limit`` in total.

        Returns an empty list once the mailbox is closed and empty.
        """
        ...

    def __aiter__(self) -> AsyncIterator[T]: ...


@runtime_checkable
class Ref(Protocol[Tntra]):
    """A handle to send messages to one actor (or a topic)."""

    @property
    def name(self) -> str: ...

    async def tell(self, msg: Tntra) -> None:
        """Deliver ``msg`` applying the mailbox's overflow policy (BLOCK waits)."""
        ...

    def tell_nowait(self, msg: Tntra) -> None:
        """Deliver ``msg`` without waiting; a full BLOCK mailbox raises ``anyio.WouldBlock``."""
        ...

    def try_tell(self, msg: Tntra) -> bool:
        """Deliver ``msg`` now if it can be; never waits, never raises for delivery.

        False when the message was not taken: the mailbox is full (BLOCK or FAIL
        policy), closed, or its actor has gone (an asker that gave up). A DROP
        policy always takes the message (dropping as it says, counted), so True.
        For what may be lost harmlessly: cumulative reports, replies, ticks.
        """
        ...

    async def ask(self, msg: Any, timeout: float) -> Any:
        """Send ``msg`` wrapped in a ``Request`` and wait for the reply.

        Raises ``AskTimeout`` when no reply arrives in ``timeout`` seconds.
        """
        ...


@runtime_checkable
class ActorContext(Protocol):
    """What the runtime gives a running actor besides its inbox."""

    @property
    def name(self) -> str: ...

    def ref(self, name: str) -> Ref[Any]:
        """The ref of a sibling actor or topic by name (``KeyError`` if unknown)."""
        ...

    def wall_time(self) -> float:
        """Unix time in seconds, derived from ``anyio.current_time()`` so virtual clocks apply."""
        ...

    def report_healthy(self) -> None:
        """Tell the supervisor this incarnation works (closes a half-open breaker)."""
        ...


def optional_ref(ctx: ActorContext, name: str) -> Ref[Any] | None:
    """The ref of ``name``, or None where the node has no such actor (a recorder
    tap, stats in a test)."""
    try:
        return ctx.ref(name)
    except KeyError:
        return None


async def tell_when_room(ref: Ref[Any], msg: Any) -> None:
    """Tell ``msg`` at once while the mailbox has room, else wait for room: backpressure
    without the yield an awaited ``tell`` makes on every call (a topic's ``tell_nowait``
    raises before it delivers to anyone, so the message is sent exactly once)."""
    try:
        ref.tell_nowait(msg)
    except anyio.WouldBlock:
        await ref.tell(msg)


@runtime_checkable
class Actor(Protocol):
    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None: ...
