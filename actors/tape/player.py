"""The tape player: a recorded tape as a node's only source, in tape time.

Theory of operation
-------------------
A node opened on a tape (``NodeConfig.tape``) has no sockets and no wall
clock: the tape is its source and the tape's ``t`` fields are its only time.
Nothing plays until ``PlayTape`` is asked (``node.play()``), so an application
subscribes to what it wants first and sees the tape from its first line.

Playing turns every tape line into the ``HubMessageReceived`` the connection
actor would have sent, with ``received_at=t`` (validation judges in tape
time), and tells ``bars`` a ``Tick(now=t)`` whenever ``t`` enters a new whole
second, so bar timers fire in tape time. The frames go to validation in one
``HubMessagesReceived`` per tape second (at most ``MAX_FRAMES``), told just
before that second's tick: the order of one message per frame, for a mailbox
hop per second instead of per frame.

Pace: with no ``speed`` the tape plays as fast as the actors take it (every
mailbox on the way is BLOCK, so nothing is dropped and the player runs exactly
as fast as the slowest actor). With a ``speed``, tape time follows wall time
that many times as fast (1.0: as recorded), and a quiet stretch of the tape
still ticks every tape second, so bars close when they closed live.

At the end of the tape two ``Flush`` barriers empty the pipeline:
validation's (its reply carries its counters), then a far-future ``Tick``
that closes every forming bar, then bars'. They wait as long as the actors take
(a strategy reading a lossless stream slowly holds them back). Only then is
``PlayTape`` answered (``TapePlayed``): every bar has been told in its final
state. A tape is played once; asking again answers with the same
``TapePlayed`` when it is over. A
player that failed cannot resume where it was, so the node's table makes any
failure of it fatal: the node stops with it, and no ``PlayTape`` waits forever.

Determinism: a tick may overtake trades still queued in validation and close a
bar early; the late trade then amends it and a correction follows. The final
state of every bar is the aggregate of exactly its accepted trades whatever
the interleaving, so the same tape always gives the same bars.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, Final

import anyio
import anyio.lowlevel

from protocols.errors import AskTimeout
from protocols.interfaces import ActorContext, Inbox, Ref, tell_when_room
from protocols.messages import (
    Flush,
    HubMessageReceived,
    HubMessagesReceived,
    PlayTape,
    Request,
    Stop,
    TapePlayed,
    Tick,
)

from .recorder import TapeCounts, TapeLine

logger = logging.getLogger("pxnode.tape")

END_OF_TAPE: Final = 253_402_300_800.0
"""Year 10000 (unix s): a tick at this time closes every bar, whatever its length and grace."""
BARRIER_PATIENCE: Final = 120.0
"""Seconds between two asks of an end-of-tape barrier (see ``_barrier``)."""
MAX_FRAMES: Final = 64
"""Most frames told to validation in one message (fewer if a tape second ends first)."""
TICK_GAP: Final = 0.001
"""Wall seconds a paced tape waits at least between two of its quiet-stretch ticks."""

Records = Callable[[TapeCounts], Iterator[list[TapeLine]]]
"""Opens the tape: its good records in file order, a list per chunk, ``counts`` kept current."""


class TapePlayer:
    """Plays ``records`` into validation and bars when asked ``PlayTape`` (see above)."""

    def __init__(
        self, records: Records, speed: float | None = None, counts: TapeCounts | None = None
    ) -> None:
        """``speed``: None for as fast as the actors go, else tape seconds per wall second;
        ``counts`` (lines read, malformed, bytes) is kept current while the tape plays."""
        self._records = records
        self._speed = speed
        self.counts = counts if counts is not None else TapeCounts()
        self._played: TapePlayed | None = None
        self._waiting: list[Ref[Any]] = []

    def __repr__(self) -> str:
        pace = "full speed" if self._speed is None else f"x{self._speed:g}"
        return f"<TapePlayer {pace} lines={self.counts.lines}>"

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        ctx.report_healthy()
        async with anyio.create_task_group() as tg:
            async for msg in inbox:
                if isinstance(msg, Stop):
                    break
                if isinstance(msg, Request) and isinstance(msg.body, PlayTape):
                    if self._played is not None:
                        msg.reply.tell_nowait(self._played)
                        continue
                    if not self._waiting:
                        tg.start_soon(self._play, ctx)
                    self._waiting.append(msg.reply)
            tg.cancel_scope.cancel()  # a tape being played stops where it is

    async def _play(self, ctx: ActorContext) -> None:
        validation, bars = ctx.ref("validation"), ctx.ref("bars")
        pacer = None if self._speed is None else _Pacer(self._speed, bars)
        records = self._records(self.counts)
        try:
            await _feed(records, validation, bars, pacer)
        finally:
            if isinstance(records, Generator):
                records.close()  # the file now, not when the generator is collected
        counters: dict[str, int] = await _barrier(validation)
        await bars.tell(Tick(now=END_OF_TAPE))
        await _barrier(bars)
        self._played = TapePlayed(
            lines=self.counts.lines, malformed=self.counts.malformed, counters=counters
        )
        for reply in self._waiting:
            reply.tell_nowait(self._played)
        self._waiting.clear()


async def _barrier(ref: Ref[Any]) -> Any:
    """``Flush`` answered by ``ref``, however long it takes: a strategy reading a lossless
    stream slowly holds the tape back (the README's promise), it does not fail it. Asked
    again every ``BARRIER_PATIENCE`` seconds, so a barrier an actor lost by restarting is
    not waited for in vain (a late or second answer is ignored)."""
    while True:
        try:
            return await ref.ask(Flush(), BARRIER_PATIENCE)
        except AskTimeout:
            logger.info("tape: %s has not finished yet; asking again", ref.name)


class _Pacer:
    """Holds the tape back until tape time ``t`` is due in wall time (``speed`` tape
    seconds per second from the first line on), ticking bars every whole tape second
    on the way: a quiet stretch of the tape still closes its bars on time.

    Ticks come at most every ``TICK_GAP`` of wall time: at a high speed a tick
    covers that many tape seconds (a bar closes at most that late, in wall time),
    so a long quiet stretch is a few ticks, not one per tape second (a far-future
    line once meant ~1e11 of them)."""

    def __init__(self, speed: float, bars: Ref[Any]) -> None:
        self.now = -math.inf  # the tape time reached
        self._speed = speed
        self._step = max(1.0, float(math.ceil(speed * TICK_GAP)))  # tape seconds per tick
        self._bars = bars
        self._origin: tuple[float, float] | None = None  # tape t and anyio time of the first line

    async def until(self, t: float) -> None:
        if self._origin is None:
            self._origin = (t, anyio.current_time())
            self.now = t
            return
        tape0, wall0 = self._origin
        second = math.floor(self.now) + self._step
        while second < t:
            await anyio.sleep_until(wall0 + (second - tape0) / self._speed)
            await self._bars.tell(Tick(now=second))
            self.now = second
            second += self._step
        await anyio.sleep_until(wall0 + (t - tape0) / self._speed)
        self.now = t


async def _feed(
    tape: Iterable[list[TapeLine]], validation: Ref[Any], bars: Ref[Any], pacer: _Pacer | None
) -> None:
    """Tell every record to validation, ticking bars on whole tape seconds."""
    next_second = -math.inf
    frames: list[HubMessageReceived] = []
    for records in tape:  # one chunk of the file: thousands of lines
        await anyio.lowlevel.checkpoint()  # a Stop (or any cancellation) gets in between chunks
        for record in records:
            t = record.t
            if pacer is not None and t > pacer.now:
                if frames:  # what is due now goes before the wait for what is not
                    await tell_when_room(validation, HubMessagesReceived(frames))
                    frames = []
                await pacer.until(t)
            frames.append(HubMessageReceived(record.hub, record.target, record.arguments, t))
            if t >= next_second or len(frames) >= MAX_FRAMES:
                await tell_when_room(validation, HubMessagesReceived(frames))
                frames = []
                if t >= next_second:
                    next_second = math.floor(t) + 1.0
                    await tell_when_room(bars, Tick(now=t))
    if frames:
        await tell_when_room(validation, HubMessagesReceived(frames))
