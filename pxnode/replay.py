"""Replay: a tape through the same actors as a live node, bars out.

Theory of operation
-------------------
A replay is a node without sockets and without a wall clock
(``tick_interval=0``): the tape is the only source and its ``t`` fields are
the only time. Three parties run concurrently:

* the feeder (this task) turns every tape line into the ``HubMessageReceived``
  the connection actor would have sent, with ``received_at=t``, and tells
  ``bars`` a ``Tick(now=t)`` whenever ``t`` enters a new whole second, so bar
  timers fire in tape time. The frames go to ``validation`` in one
  ``HubMessagesReceived`` per tape second (at most ``MAX_FRAMES``), told just
  before that second's tick: the same order as one message per frame, for a
  mailbox hop per second instead of per frame;
* the node's own actors (validation → bars), unchanged;
* the writer, on a BLOCK subscription to ``topic.bars`` taken before the first
  line, keeping the newest version of every bar by (contract, timeframe, start).

Every mailbox on the way is BLOCK, so nothing is dropped and the feeder runs
exactly as fast as the slowest actor. At the end of the tape two ``Flush``
barriers empty the pipeline: validation's (its reply carries its counters),
then a final far-future ``Tick`` that closes every forming bar, then bars'.
After that every bar has reached the writer in its final state.

Determinism: a tick may overtake trades still queued in validation and close
a bar early; the late trade then amends it and a correction follows. The
*final* state of every bar is the aggregate of exactly its accepted trades
whatever the interleaving, and nothing from the host (wall time, ordering of
a dict) reaches the output, so the same tape always gives the same bytes.

Memory: the node is bounded by its rings and mailboxes; the writer holds one
``Bar`` per bar of the tape, which is the output itself.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import polars as pl

from actors.bars import SCHEMA
from actors.recorder import TapeCounts, read_tape
from actors.validation import TRADE_REASONS
from protocols.errors import ConfigError, PxError
from protocols.interfaces import Inbox
from protocols.messages import (
    Bar,
    BarClosed,
    BarUpdated,
    Flush,
    HubMessageReceived,
    HubMessagesReceived,
    Tick,
)
from supervisors.config import BarsConfig, NodeConfig
from supervisors.mailbox import MailboxSpec, OverflowPolicy
from supervisors.node import open_node

END_OF_TAPE = 253_402_300_800.0
"""Year 10000 (unix s): a tick at this time closes every bar, whatever its length and grace."""
FLUSH_TIMEOUT = 120.0
"""Seconds a barrier may take: it waits for at most one full mailbox of work."""
MAX_FRAMES = 64
REPLAY_MAILBOX = 32
"""Messages (of up to MAX_FRAMES frames) queued for validation at most."""
"""Most frames told to validation in one message (fewer if a tape second ends first)."""
WRITER_MAILBOX = MailboxSpec(4096, OverflowPolicy.BLOCK)
WRITER_BATCH = 1024

BarKey = tuple[str, str, int]


class ReplayStats(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``--json-stats`` object of ``pxnode replay`` (one JSON object, this schema).

    ``lines``: non-blank lines of the tape; ``malformed``: those that are not a
    tape record (bad JSON or shape), skipped; ``trades_accepted``: trade items
    that passed validation; ``trades_rejected``: rejected trade items by reason,
    every reason present (``price``, ``volume``, ``timestamp``, ``future``,
    ``too_old``, ``stale``, ``spike``, ``malformed``); ``bars``: rows written.
    """

    lines: int
    malformed: int
    trades_accepted: int
    trades_rejected: dict[str, int]
    bars: int


class ReplayResult(msgspec.Struct, frozen=True):
    """Counts and every bar of the tape in its final state, sorted (contract, timeframe, start)."""

    stats: ReplayStats
    bars: list[Bar]


async def replay(
    path: str | Path,
    timeframes: Sequence[str],
    *,
    config: NodeConfig | None = None,
    on_bar: Callable[[Bar], None] | None = None,
) -> ReplayResult:
    """Replay the tape at ``path`` building ``timeframes``; ``config`` sets everything else.

    ``on_bar`` sees every closed bar and every correction of one as it arrives
    (streamed, in emission order). Raises ``TapeError`` if the tape cannot be
    read and ``ConfigError`` for a bad timeframe.
    """
    config = _replay_config(config or NodeConfig(), timeframes)
    writer = _BarWriter(on_bar)
    counts = TapeCounts()
    tape = read_tape(path, counts)
    try:
        async with open_node(config) as node:
            with node.topic("topic.bars").subscribe("replay.writer", WRITER_MAILBOX) as inbox:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(writer.run, inbox)
                    counters = await _feed(node, tape)
                    inbox.close()  # the writer drains what the barriers pushed, then ends
    finally:
        tape.close()
    bars = writer.final()
    stats = ReplayStats(
        lines=counts.lines,
        malformed=counts.malformed,
        trades_accepted=counters.get("trades_accepted", 0),
        trades_rejected={r: counters.get(f"trades_rejected.{r}", 0) for r in TRADE_REASONS},
        bars=len(bars),
    )
    return ReplayResult(stats=stats, bars=bars)


def _replay_config(config: NodeConfig, timeframes: Sequence[str]) -> NodeConfig:
    if isinstance(timeframes, str) or not timeframes:
        raise ConfigError("replay needs a non-empty list of timeframes, e.g. ['1min', '4hr']")
    bars = msgspec.structs.replace(config.bars, timeframes=list(timeframes))
    BarsConfig.__post_init__(bars)  # replace() skips validation; a bad name raises ConfigError
    # A tape is read far faster than it is judged: a small data-path mailbox keeps
    # what is in flight (and the tape chunks its raw frames pin) to a few MiB.
    capacity = min(config.mailbox_capacity, REPLAY_MAILBOX)
    return msgspec.structs.replace(config, tick_interval=0.0, bars=bars, mailbox_capacity=capacity)


async def _feed(node: Any, tape: Iterable[list[Any]]) -> dict[str, int]:
    """Tell every record to validation, ticking bars on whole tape seconds; then the barriers."""
    validation, bars = node.ref("validation"), node.ref("bars")
    next_second = -math.inf
    frames: list[HubMessageReceived] = []
    for records in tape:  # one chunk of the file: thousands of lines
        for record in records:
            t = record.t
            frames.append(HubMessageReceived(record.hub, record.target, record.arguments, t))
            if t >= next_second or len(frames) >= MAX_FRAMES:
                await _tell(validation, HubMessagesReceived(frames))
                frames = []
                if t >= next_second:
                    next_second = math.floor(t) + 1.0
                    await _tell(bars, Tick(now=t))
    if frames:
        await _tell(validation, HubMessagesReceived(frames))
    counters: dict[str, int] = await validation.ask(Flush(), FLUSH_TIMEOUT)
    await bars.tell(Tick(now=END_OF_TAPE))
    await bars.ask(Flush(), FLUSH_TIMEOUT)
    return counters


async def _tell(ref: Any, msg: Any) -> None:
    """Await only when the mailbox is full (an awaited tell yields on every call)."""
    try:
        ref.tell_nowait(msg)
    except anyio.WouldBlock:
        await ref.tell(msg)


class _BarWriter:
    """Keeps the newest version of every bar; a closed bar or a correction goes to ``on_bar``."""

    def __init__(self, on_bar: Callable[[Bar], None] | None) -> None:
        self._bars: dict[BarKey, Bar] = {}
        self._on_bar = on_bar

    async def run(self, inbox: Inbox[Any]) -> None:
        bars, on_bar = self._bars, self._on_bar
        while batch := await inbox.receive_batch(WRITER_BATCH):
            for msg in batch:
                # Messages of one bar arrive in emission order: the last one is the newest.
                if type(msg) is BarUpdated:
                    bar = msg.bar
                    bars[(bar.contract, bar.timeframe, bar.start)] = bar
                    if msg.closed and on_bar is not None:
                        on_bar(bar)  # a correction of a closed bar
                elif type(msg) is BarClosed:
                    bar = msg.bar
                    bars[(bar.contract, bar.timeframe, bar.start)] = bar
                    if on_bar is not None:
                        on_bar(bar)

    def final(self) -> list[Bar]:
        return [self._bars[key] for key in sorted(self._bars)]


# ------------------------------------------------------------------------ output


def bars_frame(bars: Sequence[Bar]) -> pl.DataFrame:
    """``bars`` as the replay output table (the columns and types of docs/rules.md), order kept."""
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA}
    for bar in bars:
        for name, column in columns.items():
            column.append(getattr(bar, name))
    frame = pl.DataFrame(columns, schema={**SCHEMA, "start": pl.Int64})
    return frame.with_columns(pl.col("start").cast(SCHEMA["start"]))


def write_bars(bars: Sequence[Bar], path: str | Path) -> None:
    """Write ``bars`` to ``path``: Parquet for ``.parquet``, CSV for ``.csv``.

    The file appears complete or not at all (written aside, then renamed), so
    an interrupted replay never leaves a truncated output behind. ``PxError`` if
    it cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ConfigError(f"output must end in .parquet or .csv, got {str(path)!r}")
    frame = bars_frame(bars)
    partial = path.with_name(f".{path.name}.partial")
    try:
        if suffix == ".parquet":
            frame.write_parquet(partial, statistics=True)
        else:
            frame.write_csv(partial, datetime_format="%Y-%m-%dT%H:%M:%S%.6fZ")
        os.replace(partial, path)
    except OSError as error:
        raise PxError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
