"""The ``pxnode`` command line (typer).

Every command runs under trio through ``_main``, which turns SIGINT/SIGTERM
into a *graceful* stop request (the command leaves its ``open_node`` block, so
the supervisor tree shuts down in order and outputs are flushed); a second
signal cancels outright. Errors pxnode raises on purpose print as one line,
``pxnode: error: ...``, with exit code 2; nothing prints a traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import anyio
import msgspec
import typer

from protocols.errors import PxError
from protocols.timeframes import parse_timeframe

from .supervisor import unwrap

app = typer.Typer(
    name="pxnode",
    help="Realtime market-data node for the ProjectX Gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

LogLevel = Annotated[
    str, typer.Option("--log-level", help="debug, info, warning or error.", show_default=True)
]


class Stopping:
    """Set by the first SIGINT/SIGTERM; commands wait on it to stop gracefully."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.exit_code = 0


def _main(command: Callable[[Stopping], Awaitable[int]], log_level: str = "warning") -> None:
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        _fail(f"unknown log level {log_level!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = anyio.run(_with_signals, command, backend="trio")
    except BaseExceptionGroup as group:
        error = unwrap(group)
        if isinstance(error, PxError):
            _fail(str(error))
        raise
    except PxError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


async def _with_signals(command: Callable[[Stopping], Awaitable[int]]) -> int:
    stopping = Stopping()
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    if stopping.event.is_set():
                        tg.cancel_scope.cancel()  # a second signal: stop now
                        return
                    stopping.exit_code = 130 if signum == signal.SIGINT else 0
                    stopping.event.set()

        tg.start_soon(watch)
        code = await command(stopping)
        tg.cancel_scope.cancel()
    return stopping.exit_code or code


def _fail(message: str) -> None:
    typer.echo(f"pxnode: error: {message}", err=True)
    raise typer.Exit(2)


def _timeframes(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        _fail("--timeframes needs at least one timeframe, e.g. 1min,4hr")
    try:
        return [parse_timeframe(name).name for name in names]
    except PxError as error:
        _fail(str(error))
        raise


# ------------------------------------------------------------------ replay


@app.command()
def replay(
    tape: Annotated[Path, typer.Argument(help="Tape file (JSON lines of hub messages).")],
    out: Annotated[Path, typer.Option("--out", help="bars.parquet or bars.csv")],
    timeframes: Annotated[str, typer.Option(help="Comma-separated, e.g. 1min,5min,4hr.")] = "1min",
    json_stats: Annotated[bool, typer.Option("--json-stats", help="Print counts as JSON.")] = False,
    log_level: LogLevel = "warning",
) -> None:
    """Turn a recorded tape into bars, deterministically and as fast as the CPU allows."""
    from .replay import replay as run_replay
    from .replay import write_bars

    names = _timeframes(timeframes)
    if out.suffix not in (".parquet", ".csv"):
        _fail(f"--out must end in .parquet or .csv, got {out.name!r}")

    async def command(stopping: Stopping) -> int:
        result = await run_replay(tape, names)
        write_bars(result.bars, out)
        if json_stats:
            sys.stdout.write(msgspec.json.encode(result.stats).decode() + "\n")
        return 0

    _main(command, log_level)


# ----------------------------------------------------------------- gateway


@app.command()
def gateway(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the market simulator.")] = 1,
    rate: Annotated[float, typer.Option(help="Trades per second over all contracts.")] = 200.0,
    faults: Annotated[str, typer.Option(help="Fault SPEC (see README).")] = "",
    log_level: LogLevel = "warning",
) -> None:
    """Run only the simulated ProjectX gateway (REST + both SignalR hubs) on loopback."""
    from actors.gateway_sim import SimConfig, running

    try:
        config = SimConfig(host=host, port=port, seed=seed, rate=rate, faults=faults)
    except PxError as error:
        _fail(str(error))
        raise

    async def command(stopping: Stopping) -> int:
        async with running(config) as sim:
            typer.echo(f"pxnode gateway listening on http://{host}:{sim.port} (seed {seed})")
            await stopping.event.wait()
        return 0

    _main(command, log_level)


def main() -> None:
    app()
