"""The ``pxnode`` command line (typer).

Every command runs under trio (asyncio with ``--nats``: nats-py needs it)
through ``_main``, which turns SIGINT/SIGTERM
into a *graceful* stop request (the command leaves its ``open_node`` block, so
the supervisor tree shuts down in order and outputs are flushed); a second
signal cancels outright. Errors pxnode raises on purpose print as one line,
``pxnode: error: ...``, with exit code 2; nothing prints a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec
import typer
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

from actors.nats_bridge import NatsConfig
from actors.tape import TapeCounts
from protocols.errors import AuthFailed, Escalation, PxError, TapeError
from protocols.secrets import redact_userinfo
from protocols.timeframes import parse_timeframe
from supervisors.config import BarsConfig, GatewayConfig, NodeConfig, load_config
from supervisors.node import open_node
from supervisors.supervisor import unwrap

from .preflight import check_reachable

PROGRESS_PERIOD = 0.25
"""Seconds between redraws of ``pxnode replay``'s progress bar."""
POLARS_ALLOCATOR = "narenas:1,tcache:false,dirty_decay_ms:0,muzzy_decay_ms:0"
"""polars' jemalloc settings for a replay's write (read when polars loads)."""


def _plain_flags(params: list[Any]) -> list[Any]:
    """A flag takes no value, so its help shows none (typer would print ``<bool>``)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))


class _Command(TyperCommand):
    """Help as commands are written: ``pxnode record [OPTIONS] TAPE`` (typer says ``{TAPE}``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces: list[str] = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


class _Typer(typer.Typer):
    def command(
        self, *args: Any, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _Typer(
    name="pxnode",
    help="Realtime market-data node for the ProjectX Gateway.",
    no_args_is_help=True,
    cls=_Group,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"pxnode {version('pxnode')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_show_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Realtime market-data node for the ProjectX Gateway."""


LogLevel = Annotated[
    str,
    typer.Option(
        "--log-level", help="debug, info, warning or error.", show_default=True, metavar="LEVEL"
    ),
]
StreamName = Annotated[str, typer.Option("--stream", help="JetStream stream name.", metavar="NAME")]


class Stopping:
    """Set by the first SIGINT/SIGTERM; commands wait on it to stop gracefully."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.exit_code = 0


def _main(
    command: Callable[[Stopping], Awaitable[int]],
    log_level: str = "warning",
    *,
    backend: str = "trio",
) -> None:
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        _fail(f"unknown log level {log_level!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = anyio.run(_with_signals, command, backend=backend)
    except BaseExceptionGroup as group:
        error = unwrap(group)
        if isinstance(error, PxError):
            _fail(_message(error))
        raise
    except PxError as error:
        _fail(_message(error))
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


def _message(error: PxError) -> str:
    """A failure no restart can fix (an unwritable tape, refused credentials) is told as
    itself, not as the escalation it caused."""
    if isinstance(error, Escalation) and isinstance(error.__cause__, TapeError | AuthFailed):
        return str(error.__cause__)
    return str(error)


async def _with_signals(command: Callable[[Stopping], Awaitable[int]]) -> int:
    stopping = Stopping()
    code = 0  # stays 0 if a second signal cancels the command
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


async def _unless_stopped(stopping: Stopping, step: Callable[[], Awaitable[None]]) -> bool:
    """Run ``step``, abandoned at the first signal (True if it ran to its end): for the
    steps with nothing to drain (a replay, the preflight)."""
    async with anyio.create_task_group() as tg:

        async def abandon_on_signal() -> None:
            await stopping.event.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(abandon_on_signal)
        await step()
        tg.cancel_scope.cancel()
    return not stopping.event.is_set()


def _fail(message: str) -> None:
    typer.echo(f"pxnode: error: {redact_userinfo(message)}", err=True)
    raise typer.Exit(2)


def _check_out(out: Path) -> None:
    """``--out`` names a file in a directory that exists: found now, not after the work."""
    try:
        if out.is_dir():
            _fail(f"--out {str(out)!r} is a directory")
        if not out.parent.is_dir():
            _fail(f"--out {str(out)!r}: no such directory {str(out.parent)!r}")
    except OSError as error:  # not even looked at: permission, a name too long
        _fail(f"--out {str(out)!r}: {error.strerror or error}")


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
    from .replay import ReplayStats, replay_to
    from .tape_filter import TapeFilter

    names = _timeframes(timeframes)
    if out.suffix not in (".parquet", ".csv"):
        _fail(f"--out must end in .parquet or .csv, got {out.name!r}")
    _check_out(out)
    if (tape is None) == (nats is None):
        _fail("replay takes a TAPE or --nats URL (one of them)")
    if nats is not None and since is None:
        _fail("--nats needs --since (ISO time, e.g. 2026-12-03T14:30:00Z)")
    start, end = _window(since, until)
    wanted = _contracts(contracts)
    if contracts is not None and not wanted:
        _fail("--contracts needs at least one contract id")
    only = None
    if nats is None and (start or end or wanted):
        only = TapeFilter(start, end, wanted or None)
    source = None if nats is None else _nats_config(nats, stream)

    async def command(stopping: Stopping) -> int:
        # A replay has nothing to drain: a signal abandons it (the output file is
        # only ever written whole, through a temporary file and a rename).
        results: list[ReplayStats] = []

        async def run() -> None:
            if nats is None:
                assert tape is not None
                async with _progress(tape, show=not json_stats) as counts:
                    results.append(await replay_to(tape, names, out, only=only, counts=counts))
            else:
                from .stream_tape import stream_tape

                assert start is not None and source is not None
                async with stream_tape(source, wanted, start, end) as path:
                    results.append(await replay_to(path, names, out))

        if not await _unless_stopped(stopping, run):
            return 0
        stats = results[0]
        if json_stats:
            sys.stdout.write(msgspec.json.encode(stats).decode() + "\n")
        return 0

    # asyncio for every replay: as fast as trio here, and trio's import alone is 12 MiB of
    # a replay's peak memory (nats-py needs asyncio anyway).
    _main(command, log_level, backend="asyncio")


def _window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    try:
        start = None if since is None else _utc(datetime.fromisoformat(since))
        end = None if until is None else _utc(datetime.fromisoformat(until))
    except (ValueError, OverflowError) as error:  # year 1 or 9999 moved out of range by an offset
        _fail(f"--since/--until: {error}")
        raise
    if start is not None and end is not None and end <= start:
        _fail("--until must be after --since")
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


def _nats_config(url: str, stream: str, durable: str = "pxnode") -> NatsConfig:
    try:
        return NatsConfig(url=url, stream=stream, durable=durable)
    except PxError as error:
        _fail(str(error))
        raise


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
    from .chart import read_bars, render_chart, select_series
    from .replay import bars_frame
    from .replay import replay as run_replay

    if out.suffix.lower() not in (".html", ".htm"):
        _fail(f"--out must end in .html, got {out.name!r}")
    _check_out(out)
    is_tape = source.suffix.lower() not in (".parquet", ".csv")
    if is_tape and timeframe is None:
        _fail("charting a tape needs --timeframe (the bars to build), e.g. --timeframe 1min")
    wanted = None if timeframe is None else _timeframes(timeframe)[:1]

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
    """Run only the simulated ProjectX gateway (REST + both SignalR hubs) on loopback.

    It accepts the demo login and, if both are set, PROJECT_X_USERNAME /
    PROJECT_X_API_KEY, so an SDK can be pointed at it with its usual environment."""
    from pxnode.sim import DEMO_API_KEY, DEMO_USERNAME, SimConfig, running

    credentials = {DEMO_USERNAME: DEMO_API_KEY}
    username, api_key = os.environ.get("PROJECT_X_USERNAME"), os.environ.get("PROJECT_X_API_KEY")
    if username and api_key:
        credentials[username] = api_key
    try:
        config = SimConfig(
            host=host, port=port, seed=seed, rate=rate, faults=faults, credentials=credentials
        )
    except PxError as error:
        _fail(str(error))
        raise

    async def command(stopping: Stopping) -> int:
        async with running(config) as sim:
            typer.echo(f"pxnode gateway listening on http://{host}:{sim.port} (seed {seed})")
            await stopping.event.wait()
        return 0

    _main(command, log_level)


# ------------------------------------------------------------ live commands

Contracts = Annotated[
    list[str] | None,
    typer.Option(
        "--contracts", help="Contract ids or symbols, comma-separated or repeated.", metavar="IDS"
    ),
]
Timeframes = Annotated[
    str, typer.Option(help="Comma-separated, e.g. 1min,5min,1hr,4hr.", metavar="LIST")
]
Duration = Annotated[
    float | None,
    typer.Option(help="Stop by itself after this many seconds.", min=0, metavar="SECONDS"),
]
Json = Annotated[bool, typer.Option("--json", help="One JSON snapshot per line per second.")]
MetricsPort = Annotated[
    int | None,
    typer.Option("--metrics-port", help="Serve Prometheus text at /metrics.", metavar="PORT"),
]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="TOML config file.", metavar="FILE")
]
LiveTimeframes = Annotated[
    str | None, typer.Option(help="Comma-separated timeframes.", metavar="LIST")
]
ApiUrl = Annotated[str | None, typer.Option("--api-url", help="REST base URL.", metavar="URL")]
MarketHub = Annotated[
    str | None, typer.Option("--market-hub", help="Market hub URL.", metavar="URL")
]
UserHub = Annotated[str | None, typer.Option("--user-hub", help="User hub URL.", metavar="URL")]
Nats = Annotated[
    str | None,
    typer.Option(
        "--nats",
        help="Also publish the validated stream to this NATS JetStream server.",
        metavar="URL",
    ),
]


def _contracts(values: list[str] | None) -> list[str]:
    """Each contract once, in order (``--contracts MNQ --contracts MNQ`` broke the sim)."""
    parts = (part.strip() for value in values or [] for part in value.split(","))
    return list(dict.fromkeys(part for part in parts if part))


async def _run_node(
    config: NodeConfig,
    stopping: Stopping,
    *,
    json: bool,
    duration: float | None,
    metrics_port: int | None,
) -> int:
    from .dashboard import run_dashboard, run_json
    from .metrics import metrics_listener, serve_metrics

    # Bound before the node starts: a port in use is one line, not a started node.
    listener = None if metrics_port is None else await metrics_listener(metrics_port)
    try:
        async with open_node(config) as node, anyio.create_task_group() as tg:
            if listener is not None:
                port = await tg.start(serve_metrics, node, listener)
                typer.echo(f"pxnode: metrics at http://127.0.0.1:{port}/metrics", err=True)
            if json:
                await run_json(node, stopping.event, duration=duration)
            else:
                await run_dashboard(
                    node, stopping.event, timeframes=config.bars.timeframes, duration=duration
                )
            tg.cancel_scope.cancel()
    finally:
        if listener is not None:
            await listener.aclose()
    return 0


@app.command()
def demo(
    contracts: Contracts = None,
    timeframes: Timeframes = "1min,5min,1hr,4hr",
    faults: Annotated[str, typer.Option(help="Fault SPEC for the sim (see README).")] = "",
    duration: Duration = None,
    json: Json = False,
    seed: Annotated[int, typer.Option(help="Seed of the simulated market.")] = 1,
    rate: Annotated[float, typer.Option(help="Simulated trades per second.")] = 200.0,
    metrics_port: MetricsPort = None,
    nats: Nats = None,
    log_level: LogLevel = "warning",
) -> None:
    """Run the simulated gateway and a whole node in one process, with a live dashboard."""
    from pxnode.sim import (
        DEFAULT_CONTRACTS,
        SimConfig,
        gateway_config,
        running,
    )

    names = _timeframes(timeframes)
    wanted = _contracts(contracts) or [spec.id for spec in DEFAULT_CONTRACTS]
    ids = list(dict.fromkeys(_sim_contract(name) for name in wanted))  # MNQ,mnq: one contract
    try:
        # No user-hub snapshot, as on the real gateway: the account comes from the REST searches.
        sim_config = SimConfig(
            seed=seed, rate=rate, contracts=tuple(ids), faults=faults, user_snapshot=False
        )
    except PxError as error:
        _fail(str(error))
        raise

    async def command(stopping: Stopping) -> int:
        async with running(sim_config) as sim:
            config = NodeConfig(
                contracts=ids,
                bars=BarsConfig(timeframes=names),
                gateway=gateway_config(sim.url),  # the node finds the demo account (REST)
                seed=seed,
                nats=publish,
            )
            return await _run_node(
                config, stopping, json=json, duration=duration, metrics_port=metrics_port
            )

    publish = None if nats is None else _nats_config(nats, "PXNODE")
    _main(command, log_level, backend=_backend(publish))


def _backend(nats: NatsConfig | None) -> str:
    """nats-py runs on asyncio only; everything else runs on trio."""
    return "trio" if nats is None else "asyncio"


def _sim_contract(name: str) -> str:
    from pxnode.sim import CONTRACTS, find_contract

    found = find_contract(name)
    if found is None:
        _fail(f"unknown contract {name!r}; the simulated gateway has {', '.join(CONTRACTS)}")
        raise AssertionError
    return found


def _live_config(
    config_file: Path | None,
    contracts: list[str] | None,
    timeframes: str | None,
    api_url: str | None,
    market_hub: str | None,
    user_hub: str | None,
    record: Path | None,
    nats: str | None,
) -> NodeConfig:
    try:
        changes = {
            key: value
            for key, value in (
                ("api_url", api_url),
                ("market_hub", market_hub),
                ("user_hub", user_hub),
            )
            if value is not None
        }
        config = load_config(config_file, gateway=changes)
        gateway = config.gateway or GatewayConfig()  # changes, if any, are in config.gateway
        gateway.auth()  # missing credentials fail here, in one line, before anything starts
    except PxError as error:
        _fail(str(error))
        raise
    updates: dict[str, Any] = {"gateway": gateway}
    if names := _contracts(contracts):
        updates["contracts"] = names
    if timeframes is not None:
        updates["bars"] = msgspec.structs.replace(config.bars, timeframes=_timeframes(timeframes))
    if record is not None:
        updates["record"] = str(record)
    if nats is not None:
        base = config.nats or NatsConfig()
        updates["nats"] = _nats_config(nats, base.stream, base.durable)
    config = msgspec.structs.replace(config, **updates)
    if not config.contracts:
        _fail("no contracts: give --contracts or `contracts` in the config file")
    return config


def _run_command(
    config: NodeConfig,
    *,
    json: bool,
    duration: float | None,
    metrics_port: int | None,
    log_level: str,
) -> None:
    async def command(stopping: Stopping) -> int:
        assert config.gateway is not None
        api_url = config.gateway.api_url
        if not await _unless_stopped(stopping, lambda: check_reachable(api_url)):
            return 0
        return await _run_node(  # open_node looks contract symbols up
            config, stopping, json=json, duration=duration, metrics_port=metrics_port
        )

    _main(command, log_level, backend=_backend(config.nats))


@app.command()
def run(
    contracts: Contracts = None,
    timeframes: LiveTimeframes = None,
    api_url: ApiUrl = None,
    market_hub: MarketHub = None,
    user_hub: UserHub = None,
    record: Annotated[
        Path | None, typer.Option("--record", help="Also record a tape.", metavar="TAPE")
    ] = None,
    metrics_port: MetricsPort = None,
    duration: Duration = None,
    json: Json = False,
    config: ConfigFile = None,
    nats: Nats = None,
    log_level: LogLevel = "warning",
) -> None:
    """Run a node against a real (or any) gateway; credentials from PROJECT_X_* or the config."""
    node_config = _live_config(
        config, contracts, timeframes, api_url, market_hub, user_hub, record, nats
    )
    _run_command(
        node_config, json=json, duration=duration, metrics_port=metrics_port, log_level=log_level
    )


@app.command()
def record(
    tape: Annotated[
        Path, typer.Argument(help="Tape file to append hub messages to.", metavar="TAPE")
    ],
    contracts: Contracts = None,
    timeframes: LiveTimeframes = None,
    api_url: ApiUrl = None,
    market_hub: MarketHub = None,
    user_hub: UserHub = None,
    metrics_port: MetricsPort = None,
    duration: Duration = None,
    json: Json = False,
    config: ConfigFile = None,
    nats: Nats = None,
    log_level: LogLevel = "warning",
) -> None:
    """Record raw hub traffic to TAPE (the same as run --record TAPE)."""
    node_config = _live_config(
        config, contracts, timeframes, api_url, market_hub, user_hub, tape, nats
    )
    _run_command(
        node_config, json=json, duration=duration, metrics_port=metrics_port, log_level=log_level
    )


@app.command()
def consume(
    nats: Annotated[
        str, typer.Option("--nats", help="NATS server the ingest node publishes to.", metavar="URL")
    ],
    contracts: Annotated[
        list[str] | None,
        typer.Option(
            "--contracts",
            help="Contract ids (default: every contract in the stream).",
            metavar="IDS",
        ),
    ] = None,
    timeframes: Timeframes = "1min,5min,1hr,4hr",
    durable: Annotated[
        str, typer.Option(help="Durable consumer name: a restart resumes where it stopped.")
    ] = "pxnode",
    stream: StreamName = "PXNODE",
    metrics_port: MetricsPort = None,
    duration: Duration = None,
    json: Json = False,
    log_level: LogLevel = "warning",
) -> None:
    """Build bars from the stream another node publishes to NATS JetStream (no gateway)."""
    source = _nats_config(nats, stream, durable)
    config = NodeConfig(
        contracts=_contracts(contracts),
        bars=BarsConfig(timeframes=_timeframes(timeframes)),
        consume=source,
    )

    async def command(stopping: Stopping) -> int:
        return await _run_node(
            config, stopping, json=json, duration=duration, metrics_port=metrics_port
        )

    _main(command, log_level, backend=_backend(source))


def main() -> None:
    app()
