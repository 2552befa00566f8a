"""The commands that run a node on a gateway or a stream: ``gateway``, ``demo``, ``run``,
``record`` and ``consume``."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec
import typer

from actors.nats_bridge import NatsConfig
from actors.nats_bridge.bus import connected
from protocols.errors import PxError
from protocols.rest import RestBudget
from supervisors.config import BarsConfig, GatewayConfig, NodeConfig, load_config
from supervisors.contracts import is_contract_id, resolve_contracts
from supervisors.node import open_node

from ..preflight import check_reachable
from ._app import (
    LogLevel,
    Stopping,
    app,
    contract_ids,
    execute,
    fail,
    nats_config,
    timeframe_names,
    unless_stopped,
)

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
        fail(str(error))
        raise

    async def command(stopping: Stopping) -> int:
        async with running(config) as sim:
            typer.echo(f"pxnode gateway listening on http://{host}:{sim.port} (seed {seed})")
            await stopping.event.wait()
        return 0

    execute(command, log_level)


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


async def _run_node(
    config: NodeConfig,
    stopping: Stopping,
    *,
    json: bool,
    duration: float | None,
    metrics_port: int | None,
) -> int:
    from ..dashboard import run_dashboard, run_json
    from ..metrics import metrics_listener, serve_metrics

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

    names = timeframe_names(timeframes)
    wanted = contract_ids(contracts) or [spec.id for spec in DEFAULT_CONTRACTS]
    ids = list(dict.fromkeys(_sim_contract(name) for name in wanted))  # MNQ,mnq: one contract
    try:
        # No user-hub snapshot, as on the real gateway: the account comes from the REST searches.
        sim_config = SimConfig(
            seed=seed, rate=rate, contracts=tuple(ids), faults=faults, user_snapshot=False
        )
    except PxError as error:
        fail(str(error))
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

    publish = None if nats is None else nats_config(nats)
    execute(command, log_level, backend=_backend(publish))


def _backend(nats: NatsConfig | None) -> str:
    """nats-py runs on asyncio only; everything else runs on trio."""
    return "trio" if nats is None else "asyncio"


def _sim_contract(name: str) -> str:
    from pxnode.sim import CONTRACTS, find_contract

    found = find_contract(name)
    if found is None:
        fail(f"unknown contract {name!r}; the simulated gateway has {', '.join(CONTRACTS)}")
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
        fail(str(error))
        raise
    updates: dict[str, Any] = {"gateway": gateway}
    if names := contract_ids(contracts):
        updates["contracts"] = names
    if timeframes is not None:
        updates["bars"] = msgspec.structs.replace(
            config.bars, timeframes=timeframe_names(timeframes)
        )
    if record is not None:
        updates["record"] = str(record)
    if nats is not None:
        updates["nats"] = nats_config(nats, config.nats)
    config = msgspec.structs.replace(config, **updates)
    if not config.contracts:
        fail("no contracts: give --contracts or `contracts` in the config file")
    if config.record is not None and not Path(config.record).parent.is_dir():
        # Found now, as replay's --out is, not once the node runs.
        fail(f"cannot write tape {config.record!r}: its directory does not exist")
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
        gateway = config.gateway
        assert gateway is not None
        if not await unless_stopped(stopping, lambda: check_reachable(gateway.api_url)):
            return 0
        ids: list[str] = []

        async def look_up() -> None:  # here, where a signal or --duration can end it
            with anyio.move_on_after(math.inf if duration is None else duration):
                budget = RestBudget(gateway.rest_limits)  # the node's starts after it
                ids.extend(await resolve_contracts(config.contracts, gateway.auth(), budget=budget))

        if not await unless_stopped(stopping, look_up) or not ids:
            return 0
        node_config = msgspec.structs.replace(config, contracts=ids)
        return await _run_node(
            node_config, stopping, json=json, duration=duration, metrics_port=metrics_port
        )

    execute(command, log_level, backend=_backend(config.nats))


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
    timeframes: LiveTimeframes = None,
    durable: Annotated[
        str | None,
        typer.Option(
            help="Durable consumer name (default: the config file's, else pxnode): a restart "
            "resumes where it stopped; each consumer needs its own.",
            metavar="NAME",
        ),
    ] = None,
    stream: Annotated[
        str | None,
        typer.Option(
            help="JetStream stream name (default: the config file's, else PXNODE).", metavar="NAME"
        ),
    ] = None,
    metrics_port: MetricsPort = None,
    duration: Duration = None,
    json: Json = False,
    config: ConfigFile = None,
    log_level: LogLevel = "warning",
) -> None:
    """Build bars from the stream another node publishes to NATS JetStream (no gateway)."""
    try:
        # Its [bars], [validation] (staleness), [stats] and [nats] apply; no gateway.
        base = load_config(config, environ={})
    except PxError as error:
        fail(str(error))
        raise
    flags = {"stream": stream, "durable": durable}
    source = nats_config(nats, base.nats, **{k: v for k, v in flags.items() if v is not None})
    updates: dict[str, Any] = {"consume": source, "gateway": None, "tape": None, "record": None}
    updates["nats"] = None  # the stream's trades are published already
    if names := contract_ids(contracts):
        updates["contracts"] = names
    symbols = [
        name for name in updates.get("contracts", base.contracts) if not is_contract_id(name)
    ]
    if symbols:  # the stream's subjects are contract ids; there is no gateway to look them up
        fail(f"consume takes contract ids (CON.F.US.MNQ.Z25), not symbols: {', '.join(symbols)}")
    if timeframes is not None:
        updates["bars"] = msgspec.structs.replace(base.bars, timeframes=timeframe_names(timeframes))
    node_config = msgspec.structs.replace(base, **updates)

    async def command(stopping: Stopping) -> int:
        async def reach() -> None:  # an unreachable server is one error line, as a gateway's
            async with connected(source):
                pass

        if not await unless_stopped(stopping, reach):
            return 0
        return await _run_node(
            node_config, stopping, json=json, duration=duration, metrics_port=metrics_port
        )

    execute(command, log_level, backend=_backend(source))
