"""``pxnode replay`` and ``pxnode chart``: a tape (or a stream) to bars, bars to a chart."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec
import typer

from actors.tape import TapeCounts
from protocols.errors import PxError

from ._app import (
    LogLevel,
    Stopping,
    StreamName,
    app,
    check_out,
    contract_ids,
    execute,
    fail,
    nats_config,
    timeframe_names,
    unless_stopped,
)

PROGRESS_PERIOD = 0.25
"""Seconds between redraws of ``pxnode replay``'s progress bar."""
POLARS_ALLOCATOR = "narenas:1,tcache:false,dirty_decay_ms:0,muzzy_decay_ms:0"
"""polars' jemalloc settings for a replay's write (read when polars loads)."""
# ------------------------------------------------------------------ replay


@app.command()
def replay(
    out: Annotated[Path, typer.Option("--out", help="bars.parquet or bars.csv", metavar="FILE")],
    tape: Annotated[
        Path | None,
        typer.Argument(help="Tape file (JSON lines of hub messages).", metavar="TAPE"),
    ] = None,
    timeframes: Annotated[
        str, typer.Option(help="Comma-separated, e.g. 1min,5min,4hr.", metavar="LIST")
    ] = "1min",
    json_stats: Annotated[bool, typer.Option("--json-stats", help="Print counts as JSON.")] = False,
    nats: Annotated[
        str | None,
        typer.Option(
            "--nats", help="Replay a NATS JetStream stream instead of a tape.", metavar="URL"
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="From this ISO time: a trade's exchange time (tape), its receive time (--nats).",
            metavar="TIME",
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Up to (before) this ISO time.", metavar="TIME")
    ] = None,
    contracts: Annotated[
        list[str] | None,
        typer.Option("--contracts", help="Only these contract ids.", metavar="IDS"),
    ] = None,
    stream: StreamName = "PXNODE",
    log_level: LogLevel = "warning",
) -> None:
    """Turn a recorded tape (or a NATS stream) into bars, deterministically and fast."""
    # polars loads only for the final write (pxnode.replay): one stream out, so one thread
    # and an allocator that hands memory back at once keep the peak ~10 MiB lower.
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    os.environ.setdefault("_RJEM_MALLOC_CONF", POLARS_ALLOCATOR)
    from ..replay import ReplayStats, replay_to
    from ..tape_filter import TapeFilter

    names = timeframe_names(timeframes)
    if out.suffix not in (".parquet", ".csv"):
        fail(f"--out must end in .parquet or .csv, got {out.name!r}")
    check_out(out)
    if (tape is None) == (nats is None):
        fail("replay takes a TAPE or --nats URL (one of them)")
    if tape is not None and out.resolve() == tape.resolve():
        fail(f"--out {str(out)!r} is the tape itself")
    if nats is not None and since is None:
        fail("--nats needs --since (ISO time, e.g. 2026-12-03T14:30:00Z)")
    start, end = _window(since, until)
    wanted = contract_ids(contracts)
    if contracts is not None and not wanted:
        fail("--contracts needs at least one contract id")
    only = None
    if nats is None and (start or end or wanted):
        only = TapeFilter(start, end, wanted or None)
    source = None if nats is None else nats_config(nats, stream=stream)

    async def command(stopping: Stopping) -> int:
        # A replay has nothing to drain: a signal abandons it (the output file is
        # only ever written whole, through a temporary file and a rename) and it
        # exits 143 (130 after Ctrl-C), not 0.
        results: list[ReplayStats] = []

        async def run() -> None:
            if nats is None:
                assert tape is not None
                async with _progress(tape, show=not json_stats) as counts:
                    results.append(await replay_to(tape, names, out, only=only, counts=counts))
            else:
                from supervisors.config import NodeConfig, TapeConfig

                from ..stream_tape import stream_tape

                assert start is not None and source is not None
                async with stream_tape(source, wanted, start, end) as path:
                    judged = NodeConfig(tape=TapeConfig(str(path), judged=True))
                    results.append(await replay_to(path, names, out, config=judged))

        if not await unless_stopped(stopping, run):
            return ABANDONED  # no output was written: a pipeline must not take it for done
        stats = results[0]
        if json_stats:
            sys.stdout.write(msgspec.json.encode(stats).decode() + "\n")
        return 0

    # asyncio for every replay: as fast as trio here, and trio's import alone is 12 MiB of
    # a replay's peak memory (nats-py needs asyncio anyway).
    execute(command, log_level, backend="asyncio")


ABANDONED = 128 + signal.SIGTERM
"""A replay's exit code when a signal stopped it before it wrote its output."""


def _window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    try:
        start = None if since is None else _utc(datetime.fromisoformat(since))
        end = None if until is None else _utc(datetime.fromisoformat(until))
    except (ValueError, OverflowError) as error:  # year 1 or 9999 moved out of range by an offset
        fail(f"--since/--until: {error}")
        raise
    if start is not None and end is not None and end <= start:
        fail("--until must be after --since")
    return start, end


@contextlib.asynccontextmanager
async def _progress(tape: Path, *, show: bool, console: Any = None) -> AsyncIterator[TapeCounts]:
    """Counts the replay keeps current, drawn as a progress bar (share of the tape's bytes
    read, lines/s, ETA) while stderr is a terminal; ``console`` is the tests' seam.

    rich loads only to draw (3 MiB of a replay's memory otherwise)."""
    counts = TapeCounts()
    if not show or (console is None and not sys.stderr.isatty()):
        yield counts
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield counts
        return

    try:
        size: int | None = (await anyio.Path(tape).stat()).st_size
    except OSError:
        size = None  # read_tape says why, in its own words
    columns = (
        TextColumn("replay"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rate]:,.0f} lines/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True, auto_refresh=False) as progress:
        task = progress.add_task("replay", total=size, rate=0.0)
        started = anyio.current_time()

        def draw() -> None:
            elapsed = max(anyio.current_time() - started, 1e-9)
            progress.update(task, completed=counts.bytes_read, rate=counts.lines / elapsed)
            progress.refresh()

        async with anyio.create_task_group() as tg:

            async def redraw() -> None:
                while True:
                    await anyio.sleep(PROGRESS_PERIOD)
                    draw()

            tg.start_soon(redraw)
            yield counts
            tg.cancel_scope.cancel()
        draw()


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# ------------------------------------------------------------------- chart


@app.command()
def chart(
    source: Annotated[
        Path,
        typer.Argument(
            help="A replay's bars.parquet or bars.csv, or a tape (replayed first).",
            metavar="BARS|TAPE",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.", metavar="FILE")],
    contract: Annotated[
        str | None,
        typer.Option(help="Contract id (needed when there are several).", metavar="ID"),
    ] = None,
    timeframe: Annotated[
        str | None,
        typer.Option(help="Timeframe, e.g. 1min (needed when there are several).", metavar="TF"),
    ] = None,
    log_level: LogLevel = "warning",
) -> None:
    """Draw bars as a candlestick chart with volume: one HTML file, no network needed."""
    from ..chart import read_bars, render_chart, select_series
    from ..replay import bars_frame
    from ..replay import replay as run_replay

    if out.suffix.lower() not in (".html", ".htm"):
        fail(f"--out must end in .html, got {out.name!r}")
    check_out(out)
    is_tape = source.suffix.lower() not in (".parquet", ".csv")
    if is_tape and timeframe is None:
        fail("charting a tape needs --timeframe (the bars to build), e.g. --timeframe 1min")
    wanted = None if timeframe is None else timeframe_names(timeframe)[:1]

    async def command(stopping: Stopping) -> int:
        if is_tape:
            frame = bars_frame((await run_replay(source, wanted or [])).bars)
        else:
            frame = read_bars(source)
        page = render_chart(select_series(frame, contract, wanted[0] if wanted else None))
        try:
            out.write_text(page, encoding="utf-8")
        except OSError as error:
            raise PxError(f"cannot write {str(out)!r}: {error.strerror or error}") from None
        return 0

    execute(command, log_level)
