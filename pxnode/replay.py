"""Replay: a tape through the same actors as a live node, bars out.

Theory of operation
-------------------
A replay is a node opened on the tape (``NodeConfig.tape``): no sockets, no
wall clock, the tape's ``t`` fields its only time. Its tape player
(``actors.tape``) feeds validation and ticks bars in tape time, as fast as
the actors take it; see there for the order of frames and ticks and the
barriers that end the tape. Two parties run here:

* the node, played to its end by ``node.play()``;
* the writer, on a BLOCK subscription to ``topic.bars`` taken before the tape
  plays, keeping the newest version of every bar by (contract, timeframe,
  start) until no trade still to come can change it, then passing it on.

Every mailbox on the way is BLOCK, so nothing is dropped. When ``play()``
returns, every bar has reached the writer in its final state.

Determinism: nothing from the host (wall time, ordering of a dict) reaches
the output, and the final state of every bar is the aggregate of exactly its
accepted trades whatever the interleaving of ticks and trades, so the same
tape always gives the same bytes.

Memory: the node is bounded by its rings and mailboxes; the writer holds the
bars of the last ``stale_after`` seconds of each contract. ``replay_to`` spills
final bars to disk as it goes, so its memory is flat in the tape's length;
``replay`` returns every bar, so its result is the output itself.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import itertools
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actors.bars import bar_schema
from actors.tape import TapeCounts, TapeLine, TapePlayer, read_tape
from actors.validation import TRADE_REASONS
from protocols.errors import ConfigError, Escalation, PxError, TapeError
from protocols.interfaces import Inbox
from protocols.messages import Bar, BarClosed, BarUpdated
from protocols.timeframes import BarClock, parse_timeframe
from supervisors.children import exact_ring_size
from supervisors.config import BarsConfig, NodeConfig, TapeConfig
from supervisors.mailbox import MailboxSpec, OverflowPolicy
from supervisors.node import open_node

from .tape_filter import FILTER_REASONS, TapeFilter

REPLAY_MAILBOX = 32
"""Messages (of up to the player's MAX_FRAMES frames) queued for validation at most."""
WRITER_MAILBOX = MailboxSpec(4096, OverflowPolicy.BLOCK)
WRITER_BATCH = 1024
SPILL_ROWS = 20_000
"""Final bars held before they are appended to the spill (a few MiB of them)."""
ROW_GROUP = 20_000
"""Rows per Parquet row group: what the output writer buffers at a time."""
SPILL_BLOCK = 5_000
"""Spilled rows handed to polars' sink per block: a quarter of a row group holds the
write's peak 4-5 MiB lower than a whole one, for the same time (measured)."""

if TYPE_CHECKING:
    import polars as pl

BarKey = tuple[str, str, int]
FRAME_REASONS = ("malformed", "unknown_target", "over_contract_cap")


class ReplayStats(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``--json-stats`` object of ``pxnode replay`` (one JSON object, this schema).

    ``lines``: non-blank lines of the tape; ``malformed``: those that are not a
    tape record (bad JSON or shape), skipped; ``trades_accepted``: trade items
    that passed validation; ``trades_rejected``: rejected trade items by reason,
    every reason present (``price``, ``volume``, ``timestamp``, ``future``,
    ``too_old``, ``stale``, ``spike``, ``malformed``); ``bars``: rows written;
    ``frames_skipped``: tape records whose hub message was skipped whole, by reason,
    every reason present (``malformed``: arguments not of the target's shape,
    ``unknown_target``, ``over_contract_cap``: a contract beyond
    ``validation.max_contracts``, so validation and bars keep bounded state);
    ``lines_filtered``: tape lines dropped whole by a ``TapeFilter`` (``since``,
    ``until``, ``contracts``); ``trades_filtered``: trade items it dropped, by
    reason, every reason present (``before_since``, ``after_until``, ``contract``).
    """

    lines: int
    malformed: int
    trades_accepted: int
    trades_rejected: dict[str, int]
    bars: int
    frames_skipped: dict[str, int]
    lines_filtered: int = 0
    trades_filtered: dict[str, int] = msgspec.field(
        default_factory=lambda: dict.fromkeys(FILTER_REASONS, 0)
    )


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
    only: TapeFilter | None = None,
) -> ReplayResult:
    """Replay the tape at ``path`` building ``timeframes``; ``config`` sets everything else
    (of its ``tape`` only ``judged``: a replay plays ``path`` at full speed).

    Every bar is returned, so the result grows with the tape: ``replay_to``
    writes a file of any size in flat memory. ``on_bar`` sees every closed bar
    and every correction of one as it arrives (streamed, in emission order).
    ``only`` replays just a window of the tape (see ``pxnode.tape_filter``).
    Raises ``TapeError`` if the tape cannot be read, ``ConfigError`` for a bad
    timeframe or a contract of ``only`` the tape has no frame of.
    """
    bars: list[Bar] = []
    stats = await _replay(path, timeframes, config, on_bar, bars.append, only)
    bars.sort(key=_key)
    return ReplayResult(stats=stats, bars=bars)


async def replay_to(
    path: str | Path,
    timeframes: Sequence[str],
    out: str | Path,
    *,
    config: NodeConfig | None = None,
    only: TapeFilter | None = None,
    counts: TapeCounts | None = None,
) -> ReplayStats:
    """Replay the tape at ``path`` into the bar file ``out`` (``.parquet`` or ``.csv``).

    Bars leave memory as they become final (spilled aside, by series), so the
    memory of a replay does not grow with the tape; the file is assembled from
    the spill at the end and appears complete or not at all. ``counts`` is kept
    current while the tape is read (a progress bar watches it). Raises like
    ``replay`` and ``write_bars``, and ``ConfigError`` (no file written) when
    ``only`` names a contract the tape has no frame of.
    """
    out = _output(out)
    try:
        spill = tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent)
    except OSError as error:
        raise PxError(f"cannot write {str(out)!r}: {error.strerror or error}") from None
    with spill as directory:
        series = _Series(Path(directory))
        stats = await _replay(path, timeframes, config, None, series.add, only, counts)
        _write(series.frame(), out)
    return stats


async def _replay(
    path: str | Path,
    timeframes: Sequence[str],
    config: NodeConfig | None,
    on_bar: Callable[[Bar], None] | None,
    sink: Callable[[Bar], None],
    only: TapeFilter | None = None,
    counts: TapeCounts | None = None,
) -> ReplayStats:
    config = _replay_config(config or NodeConfig(), timeframes, path)
    written = 0

    def count(bar: Bar) -> None:
        nonlocal written
        written += 1
        sink(bar)

    writer = _BarWriter(timeframes, config.validation.stale_after, on_bar, count)
    counts = counts if counts is not None else TapeCounts()

    def records(counts: TapeCounts) -> Iterator[list[TapeLine]]:
        tape = read_tape(path, counts)
        return tape if only is None else only.lines(tape)

    player = TapePlayer(records, counts=counts)
    try:
        async with open_node(config, {"tape": player}) as node:
            with node.topic("topic.bars").subscribe("replay.writer", WRITER_MAILBOX) as inbox:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(writer.run, inbox)
                    counters = (await node.play()).counters
                    inbox.close()  # the writer drains what the barriers pushed, then ends
    except Escalation as error:
        if isinstance(error.__cause__, TapeError):  # the tape became unreadable midway
            raise error.__cause__ from None
        raise
    writer.finish()
    if only is not None and only.unseen:
        raise ConfigError(f"unknown contract {min(only.unseen)!r}: the tape has no frame of it")
    return ReplayStats(
        lines=counts.lines,
        malformed=counts.malformed,
        trades_accepted=counters.get("trades_accepted", 0),
        trades_rejected={r: counters.get(f"trades_rejected.{r}", 0) for r in TRADE_REASONS},
        bars=written,
        frames_skipped={r: counters.get(f"frames_{r}", 0) for r in FRAME_REASONS},
        lines_filtered=0 if only is None else only.lines_dropped,
        trades_filtered=dict.fromkeys(FILTER_REASONS, 0) if only is None else only.trades_dropped,
    )


def _key(bar: Bar) -> BarKey:
    return (bar.contract, bar.timeframe, bar.start)


def _replay_config(config: NodeConfig, timeframes: Sequence[str], path: str | Path) -> NodeConfig:
    if isinstance(timeframes, str) or not timeframes:
        raise ConfigError("replay needs a non-empty list of timeframes, e.g. ['1min', '4hr']")
    bars = msgspec.structs.replace(config.bars, timeframes=list(timeframes))
    BarsConfig.__post_init__(bars)  # replace() skips validation; a bad name raises ConfigError
    # The writer takes every bar as it closes: the rings hold exactly what a late trade
    # can still amend (fewer live objects: a quarter less time on a 1M-trade tape), and
    # no less, whatever ``ring_size`` says: a replay's output is not bounded by rings.
    exact = exact_ring_size(msgspec.structs.replace(config, bars=bars))
    bars = msgspec.structs.replace(bars, ring_size=exact)
    # A tape is read far faster than it is judged: a small data-path mailbox keeps
    # what is in flight (and the tape chunks its raw frames pin) to a few MiB.
    capacity = min(config.mailbox_capacity, REPLAY_MAILBOX)
    tape = TapeConfig(str(path), judged=config.tape is not None and config.tape.judged)
    return msgspec.structs.replace(config, tape=tape, bars=bars, mailbox_capacity=capacity)


class _BarWriter:
    """Holds each bar until no accepted trade can still change it, then hands it to ``sink``.

    Validation accepts a trade only if it is at most ``stale_after`` older than
    the newest accepted trade of its contract, and every bar the writer has seen
    holds an accepted trade at or after its start. So once some bar of a
    contract starts at ``s``, no later trade can land before ``s - stale_after``:
    a *closed* bar ending by then is final, whatever the interleaving of ticks
    and trades. Within a series bars become final in start order (a new bar
    cannot start before a final one ends), so the sink sees each series sorted.
    """

    def __init__(
        self,
        timeframes: Sequence[str],
        stale_after: float,
        on_bar: Callable[[Bar], None] | None,
        sink: Callable[[Bar], None],
    ) -> None:
        self._bars: dict[BarKey, Bar] = {}  # bars that may still change
        self._due: dict[
            str, list[tuple[int, BarKey]]
        ] = {}  # per contract: (end, key) of closed bars
        self._newest: dict[str, int] = {}  # per contract: the latest bar start seen
        self._margin = round(stale_after * 1_000_000)  # as validation rounds it
        self._clocks = {name: BarClock(parse_timeframe(name)) for name in timeframes}
        self._on_bar = on_bar
        self._sink = sink

    async def run(self, inbox: Inbox[Any]) -> None:
        while batch := await inbox.receive_batch(WRITER_BATCH):
            for msg in batch:
                if type(msg) is BarUpdated:
                    self._take(msg.bar, msg.closed, msg.closed)
                elif type(msg) is BarClosed:
                    self._take(msg.bar, True, False)
            self._release()

    def _take(self, bar: Bar, closed: bool, corrected: bool) -> None:
        # Messages of one bar arrive in emission order: the last one is the newest.
        contract, start = bar.contract, bar.start
        key = (contract, bar.timeframe, start)
        self._bars[key] = bar
        if start > self._newest.get(contract, start - 1):
            self._newest[contract] = start
        if closed:
            if not corrected:
                end = self._clocks[bar.timeframe].bounds(start)[1]
                heapq.heappush(self._due.setdefault(contract, []), (end, key))
            if self._on_bar is not None:
                self._on_bar(bar)

    def _release(self) -> None:
        bars, sink = self._bars, self._sink
        for contract, due in self._due.items():
            final = self._newest[contract] - self._margin
            while due and due[0][0] <= final:
                sink(bars.pop(heapq.heappop(due)[1]))

    def finish(self) -> None:
        """Hand over every remaining bar (the end-of-tape barriers closed them all)."""
        self._due.clear()
        bars, self._bars = self._bars, {}
        for key in sorted(bars):
            self._sink(bars[key])


# ------------------------------------------------------------------------ output


def bars_frame(bars: Sequence[Bar]) -> pl.DataFrame:
    """``bars`` as the replay output table (the columns and types of docs/rules.md), order kept."""
    import polars as pl

    schema = bar_schema()
    columns: dict[str, list[Any]] = {name: [] for name in schema}
    for bar in bars:
        for name, column in columns.items():
            column.append(getattr(bar, name))
    frame = pl.DataFrame(columns, schema={**schema, "start": pl.Int64})
    return frame.with_columns(pl.col("start").cast(schema["start"]))


def write_bars(bars: Sequence[Bar], path: str | Path) -> None:
    """Write ``bars`` to ``path``: Parquet for ``.parquet``, CSV for ``.csv``.

    The file appears complete or not at all (written aside, then renamed), so
    an interrupted replay never leaves a truncated output behind. ``PxError`` if
    it cannot be written.
    """
    _write(bars_frame(bars).lazy(), _output(path))


def _output(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".parquet", ".csv"):
        raise ConfigError(f"output must end in .parquet or .csv, got {str(path)!r}")
    return path


def _write(frame: pl.LazyFrame, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    try:
        if path.suffix.lower() == ".parquet":
            frame.sink_parquet(partial, statistics=True, row_group_size=ROW_GROUP)
        else:
            frame.sink_csv(partial, datetime_format="%Y-%m-%dT%H:%M:%S%.6fZ")
        os.replace(partial, path)
    except OSError as error:
        raise PxError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


class _Series:
    """Final bars by series, appended as CSV rows to one file per series in ``directory``.

    Each series arrives in start order (see ``_BarWriter``), so the output is
    the series in (contract, timeframe) order, each one its file: polars
    streams that concatenation to the output at the end without sorting it or
    holding it. The rows are written by Python (no native buffers kept during
    the replay) and carry numbers only; the series' names are columns added
    from the file's key, so no contract id ever needs quoting.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._held: dict[tuple[str, str], list[str]] = {}
        self._files: dict[tuple[str, str], Path] = {}
        self._count = 0

    def add(self, bar: Bar) -> None:
        row = (
            f"{bar.start},{bar.open!r},{bar.high!r},{bar.low!r},{bar.close!r},"
            f"{bar.volume},{bar.trades}\n"
        )
        self._held.setdefault((bar.contract, bar.timeframe), []).append(row)
        self._count += 1
        if self._count >= SPILL_ROWS:
            self._spill()

    def _spill(self) -> None:
        for series, rows in self._held.items():
            path = self._files.get(series)
            if path is None:
                path = self._files[series] = self._directory / f"{len(self._files)}.csv"
            with path.open("a") as file:
                file.writelines(rows)
        self._held.clear()
        self._count = 0

    def frame(self) -> pl.LazyFrame:
        """Every bar, sorted (contract, timeframe, start), read lazily from the spill.

        The spill is handed to polars' streaming sink a block at a time by a
        Python source, one series after another: a scan per file would have the
        engine read ahead in all of them and hold a share of the whole output
        (+50 MiB for 10M trades; the source keeps the write flat in tape length).
        """
        from polars.io.plugins import register_io_source

        self._spill()
        files = sorted(self._files.items())

        def blocks(
            columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, _: int | None
        ) -> Iterator[pl.DataFrame]:
            left = n_rows
            for (contract, timeframe), path in files:
                with path.open("rb") as file:
                    while (left is None or left > 0) and (
                        rows := b"".join(itertools.islice(file, SPILL_BLOCK))
                    ):
                        block = _block(rows, contract, timeframe)
                        if predicate is not None:
                            block = block.filter(predicate)
                        if columns is not None:
                            block = block.select(columns)
                        if left is not None:
                            block, left = block.head(left), left - min(left, block.height)
                        yield block

        return register_io_source(blocks, schema=bar_schema())


def _block(rows: bytes, contract: str, timeframe: str) -> pl.DataFrame:
    """Spilled CSV rows of one series (start, open ... trades: numbers only) as output rows."""
    import polars as pl

    schema = bar_schema()
    numbers = {name: kind for name, kind in schema.items() if kind != pl.String}
    spilled = {**numbers, "start": pl.Int64}
    frame = pl.read_csv(io.BytesIO(rows), has_header=False, schema=spilled)
    return frame.select(
        pl.lit(contract, pl.String).alias("contract"),
        pl.lit(timeframe, pl.String).alias("timeframe"),
        pl.col("start").cast(schema["start"]),
        *(name for name in numbers if name != "start"),
    )
