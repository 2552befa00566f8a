"""The node: the table's rows built into a supervisor tree, and the handle on it.

``open_node(config, overrides)`` is the single entry point for embedding,
the CLI and tests. It builds every row of ``NODE_CHILDREN`` (``children``) that
the config enables into one supervisor and yields a ``Node``: refs, topics,
snapshots and the bars.

Any row can be replaced by name: ``overrides={"stats": fake}`` where ``fake``
is an actor object (``run(inbox, ctx)``) or a zero-argument factory of one;
``network=Network(...)`` redirects every socket and REST request of the live rows.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actors.nats_bridge import require_asyncio
from actors.tape import open_tape
from protocols.account import (
    AccountEvent,
    AccountInfo,
    AccountState,
    Fill,
    GetAccountState,
    OpenPosition,
    WorkingOrder,
)
from protocols.errors import ConfigError, NotReady, UnknownSeries
from protocols.health import GetHealth, HealthReport
from protocols.hubs import SubscribeContract
from protocols.messages import (
    BackfillState,
    BarClosed,
    BarUpdated,
    GetBackfill,
    GetBars,
    GetStats,
    PlayTape,
    QuotesAccepted,
    TapePlayed,
    TrackTimeframes,
    TradesAccepted,
)
from protocols.stats import StatsSnapshot
from protocols.timeframes import parse_timeframe

from .config import NodeConfig
from .contracts import is_contract_id, resolve_contracts
from .mailbox import Mailbox, MailboxSpec, MailboxStatistics, OverflowPolicy
from .registry import Registry
from .supervisor import ChildSpec, Supervisor, unwrap
from .topic import Subscription, Topic

if TYPE_CHECKING:
    import polars as pl

from .children import NODE_CHILDREN, TOPICS, Network, NodeChild, rest_budget, subscribed_contracts


class Node:
    """A running node: refs, topics and snapshots. Obtain one from ``open_node``."""

    def __init__(
        self, config: NodeConfig, registry: Registry, supervisor: Supervisor, network: Network
    ) -> None:
        self.config = config
        self.registry = registry
        self.supervisor = supervisor
        self._network = network
        self._streams = 0
        self._contracts: dict[str, None] = dict.fromkeys(config.contracts)
        self._timeframes: dict[str, None] = dict.fromkeys(
            parse_timeframe(name).name for name in config.bars.timeframes
        )

    def __repr__(self) -> str:
        return f"<Node children={self.supervisor.child_names()}>"

    def ref(self, name: str) -> Any:
        return self.registry.ref(name)

    def topic(self, name: str) -> Topic[Any]:
        """A broadcast point (``topic.bars``, ``topic.trades``, ...); subscribe to it."""
        if name not in TOPICS:
            raise KeyError(f"no topic {name!r}; topics are {', '.join(TOPICS)}")
        return self.registry.topic(name)

    async def subscribe(self, contracts: Sequence[str], timeframes: Sequence[str] = ()) -> None:
        """Subscribe quotes, trades and depth of ``contracts`` (ids or symbols, looked up
        as at start: ``ConfigError`` if unknown; kept across reconnects), and build
        ``timeframes`` too from now on (checked here: ``ConfigError``).

        New series are back-filled from history like those configured at start. A node
        without a gateway (fed by a tape or a stream) takes its source's contracts: it
        adds timeframes only, and refuses contracts (``ConfigError``, nothing changed)."""
        names = [parse_timeframe(name).name for name in timeframes]
        if contracts and "connection_market" not in self.registry:
            raise ConfigError(
                "this node has no gateway to subscribe contracts on (it is fed by a tape or a "
                "stream, whose contracts it takes): subscribe timeframes only"
            )
        contracts = await _contract_ids(self.config, list(contracts), self.registry, self._network)
        history = self.ref("history") if "history" in self.registry else None
        if names:
            self._timeframes.update(dict.fromkeys(names))
            await self.ref("bars").tell(TrackTimeframes(names))
            if history is not None:  # their past comes from History/retrieveBars
                await history.tell(TrackTimeframes(names))
        for contract in contracts:
            self._contracts[contract] = None
            subscribed_contracts(self.registry).add(contract)  # before its first trade arrives
            await self.ref("connection_market").tell(SubscribeContract(contract))
            if history is not None:
                await history.tell(SubscribeContract(contract))

    async def ready(self, timeout: float = 120.0) -> None:
        """Return once both hubs are connected and subscribed and every series of every
        contract x timeframe is back-filled from history (at once for a node without a
        gateway). Raises ``NotReady`` naming what is not ready: at ``timeout``, or at
        once when a back-fill failed for good (e.g. errorCode 1, ContractNotFound).
        """
        missing = await self._not_ready()  # once whatever the timeout: 0 asks "ready now?"
        with anyio.move_on_after(timeout):
            while missing:
                await anyio.sleep(0.05)
                missing = await self._not_ready()
        if missing:
            raise NotReady(f"node not ready after {timeout:g} s: {'; '.join(missing)}")

    async def play(self) -> TapePlayed:
        """Play the node's tape (``NodeConfig.tape``) and return once it is over: every
        line judged, every bar closed and told to the streams, in its final state.

        Subscribe first (``stream_bars``, ``stream_trades``...): nothing plays before
        this call, so a stream opened before it sees the tape from its first line.
        A tape plays once; a second call returns the same counts. ``ConfigError`` for
        a node without a tape.
        """
        if "tape" not in self.registry:
            raise ConfigError("play() needs a node opened on a tape (NodeConfig.tape)")
        played = await self.ref("tape").ask(PlayTape(), timeout=math.inf)
        assert isinstance(played, TapePlayed)
        return played

    async def _not_ready(self) -> list[str]:
        missing: list[str] = []
        if "health" in self.registry and self.config.gateway is not None:
            report = await self.health()
            down = [hub for hub, h in report.hubs.items() if not h.connected]
            missing += [f"{hub} hub not connected" for hub in down]
        if "history" in self.registry:
            state = await self.ref("history").ask(GetBackfill(), timeout=5.0)
            assert isinstance(state, BackfillState)
            if state.failed:
                failed = "; ".join(f"{series}: {why}" for series, why in state.failed.items())
                raise NotReady(f"back-fill failed: {failed}")
            if state.pending:
                why = state.retrying
                pending = [f"{s} (again after: {why[s]})" if s in why else s for s in state.pending]
                missing.append(f"not back-filled yet: {', '.join(pending)}")
        return missing

    def stream_bars(
        self,
        *,
        contracts: Sequence[str] | None = None,
        timeframes: Sequence[str] | None = None,
        **policy: Any,
    ) -> Subscription[BarUpdated | BarClosed]:
        """``BarUpdated`` (forming bars and corrections) and ``BarClosed`` as they happen,
        of ``contracts`` x ``timeframes`` only if given. ``bar.source`` tells back-filled
        bars (``"history"``) from live ones."""
        wanted = self._check(contracts, timeframes)
        if wanted is None:
            return self._stream("topic.bars", "bars", **policy)
        keep_contracts, keep_frames = wanted

        def select(msg: BarUpdated | BarClosed) -> BarUpdated | BarClosed | None:
            bar = msg.bar
            if keep_contracts is not None and bar.contract not in keep_contracts:
                return None
            if keep_frames is not None and bar.timeframe not in keep_frames:
                return None
            return msg

        return self._stream("topic.bars", "bars", select=select, **policy)

    def stream_trades(
        self, *, contracts: Sequence[str] | None = None, **policy: Any
    ) -> Subscription[TradesAccepted]:
        """Every validated trade (of ``contracts`` only if given), in ``TradesAccepted``
        batches in arrival order."""
        wanted = self._check(contracts, None)
        if wanted is None:
            return self._stream("topic.trades", "trades", **policy)
        keep = wanted[0] or frozenset()

        def select(msg: TradesAccepted) -> TradesAccepted | None:
            mine = [t for t in msg.trades if t.contract in keep]
            if len(mine) == len(msg.trades):
                return msg
            return TradesAccepted(mine) if mine else None

        return self._stream("topic.trades", "trades", select=select, **policy)

    def stream_quotes(
        self, *, contracts: Sequence[str] | None = None, **policy: Any
    ) -> Subscription[QuotesAccepted]:
        """Every validated quote (of ``contracts`` only if given), in ``QuotesAccepted``
        batches in arrival order."""
        wanted = self._check(contracts, None)
        if wanted is None:
            return self._stream("topic.quotes", "quotes", **policy)
        keep = wanted[0] or frozenset()

        def select(msg: QuotesAccepted) -> QuotesAccepted | None:
            mine = [q for q in msg.quotes if q.contract in keep]
            if len(mine) == len(msg.quotes):
                return msg
            return QuotesAccepted(mine) if mine else None

        return self._stream("topic.quotes", "quotes", select=select, **policy)

    def stream_user(self, **policy: Any) -> Subscription[AccountEvent]:
        """What changed in the trader's accounts, positions, orders and fills, as the
        account actor applied it (``AccountChanged``, ``PositionChanged``,
        ``OrderChanged``, ``FillReceived``)."""
        return self._stream("topic.account", "user", **policy)

    async def account_state(self) -> AccountState:
        """Accounts, open positions, working orders and the newest fills, at once."""
        state = await self.ref("account").ask(GetAccountState(), timeout=5.0)
        assert isinstance(state, AccountState)
        return state

    async def accounts(self) -> tuple[AccountInfo, ...]:
        return (await self.account_state()).accounts

    async def positions(self) -> tuple[OpenPosition, ...]:
        """Open positions (size > 0)."""
        return (await self.account_state()).positions

    async def orders(self) -> tuple[WorkingOrder, ...]:
        """Working orders (open, pending, pending cancellation, suspended)."""
        return (await self.account_state()).orders

    async def fills(self) -> tuple[Fill, ...]:
        """The newest fills the node keeps (``NodeConfig.max_fills``), oldest first."""
        return (await self.account_state()).fills

    def stream_events(self, **policy: Any) -> Subscription[Any]:
        """Supervision, breaker, connection and heartbeat events."""
        return self._stream("topic.events", "events", **policy)

    def _check(
        self, contracts: Sequence[str] | None, timeframes: Sequence[str] | None
    ) -> tuple[frozenset[str] | None, frozenset[str] | None] | None:
        """The filters of a stream as sets (None: everything); a name the node does not
        know raises ``UnknownSeries`` (it would be a stream that never says anything)."""
        if contracts is None and timeframes is None:
            return None
        keep_contracts = None if contracts is None else frozenset(contracts)
        keep_frames = None
        if isinstance(contracts, str) or isinstance(timeframes, str):
            raise ConfigError("contracts and timeframes are lists of names, not one string")
        if keep_contracts is not None:
            self._known_contracts(keep_contracts)
        if timeframes is not None:
            keep_frames = frozenset(parse_timeframe(name).name for name in timeframes)
            self._known_timeframes(keep_frames)
        return keep_contracts, keep_frames

    def _known_contracts(self, contracts: Iterable[str]) -> None:
        if self.config.gateway is None:
            return  # a node fed by a tape knows its contracts only from the tape
        unknown = [c for c in contracts if c not in self._contracts]
        if unknown:
            raise UnknownSeries(
                f"no contract {', '.join(map(repr, unknown))} in this node; "
                f"it has {', '.join(self._contracts) or 'none'} (node.subscribe adds more)"
            )

    def _known_timeframes(self, timeframes: Iterable[str]) -> None:
        unknown = [tf for tf in timeframes if tf not in self._timeframes]
        if unknown:
            raise UnknownSeries(
                f"timeframe {', '.join(map(repr, unknown))} is not built by this node; "
                f"it builds {', '.join(self._timeframes)} (node.subscribe adds more)"
            )

    def _stream(
        self,
        topic: str,
        kind: str,
        *,
        capacity: int = 1024,
        policy: OverflowPolicy = OverflowPolicy.DROP_OLDEST,
        select: Callable[[Any], Any] | None = None,
    ) -> Subscription[Any]:
        """A subscriber's own bounded mailbox: a slow consumer never stalls the feed
        (with the default DROP_OLDEST its drops are counted in its statistics); BLOCK
        makes it lossless at the price of backpressure on the publisher."""
        self._streams += 1
        name = f"stream.{kind}.{self._streams}"
        return self.topic(topic).subscribe(name, MailboxSpec(capacity, policy), select)

    async def bars(self, contract: str, timeframe: str, n: int = 100) -> pl.DataFrame:
        """The last ``n`` bars of ``contract`` x ``timeframe`` (forming bar last).

        ``UnknownSeries`` for a contract or timeframe the node does not build
        (``ConfigError`` for a timeframe that is not one at all).
        """
        self._known_contracts([contract])
        name = parse_timeframe(timeframe).name
        self._known_timeframes([name])
        frame: pl.DataFrame = await self.ref("bars").ask(GetBars(contract, name, n), timeout=5.0)
        return frame

    async def health(self) -> HealthReport:
        report = await self.ref("health").ask(GetHealth(), timeout=5.0)
        assert isinstance(report, HealthReport)
        return report

    async def stats(self) -> StatsSnapshot:
        snapshot = await self.ref("stats").ask(GetStats(), timeout=5.0)
        assert isinstance(snapshot, StatsSnapshot)
        return snapshot

    def mailbox_statistics(self) -> list[MailboxStatistics]:
        return self.registry.mailbox_statistics()


def _factory(
    row: NodeChild, config: NodeConfig, registry: Registry, network: Network, override: Any
) -> Any:
    if override is None:
        return row.make(config, registry, network)
    if hasattr(override, "run") and not isinstance(override, type):
        return lambda: override
    if callable(override):
        return override
    raise ConfigError(f"override for {row.name!r} must be an actor or a factory of one")


@asynccontextmanager
async def open_node(
    config: NodeConfig | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    network: Network | None = None,
) -> AsyncIterator[Node]:
    """Run a node for the duration of the ``async with`` block.

    ``overrides`` replace actors by name; ``network`` redirects every socket
    and REST request of the live rows (see ``Network``).
    Contract symbols (``MNQ``) are looked up first (Contract/search), so an unknown
    one is a ``ConfigError`` here, before anything starts. On exit the supervisor
    tree shuts down in order and nothing is left running. An escalation from the
    tree is raised out of the block.
    """
    config = config if config is not None else NodeConfig()
    if config.nats is not None or config.consume is not None:
        require_asyncio()
    overrides = dict(overrides or {})
    network = network if network is not None else Network()
    rows = [row for row in NODE_CHILDREN if row.enabled(config)]
    unknown = set(overrides) - {row.name for row in rows}
    if unknown:
        raise ConfigError(f"no node child named {', '.join(sorted(unknown))}")
    registry = Registry()
    ids = await _contract_ids(config, list(config.contracts), registry, network)
    if ids != config.contracts:
        config = msgspec.structs.replace(config, contracts=ids)
        rows = [row for row in NODE_CHILDREN if row.enabled(config)]
    if config.tape is not None:
        open_tape(config.tape.path).close()  # an unreadable tape fails here, before anything runs
    for name in TOPICS:
        registry.topic(name)
    specs = [
        ChildSpec(
            name=row.name,
            factory=_factory(row, config, registry, network, overrides.get(row.name)),
            restart=row.restart,
            shutdown=row.shutdown,
            mailbox=row.mailbox(config),
            backoff=row.backoff,
            breaker=row.breaker,
            fatal=row.fatal,
        )
        for row in rows
    ]
    supervisor = Supervisor(
        "node", specs, registry=registry, rng=random.Random(config.seed), intensity=10, period=60
    )
    for row in rows:
        for topic in row.attach:
            registry.topic(topic).attach(registry.mailbox(row.name))
    root: Mailbox[Any] = Mailbox("node", MailboxSpec(1))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(_run_root, supervisor, root)
            try:
                yield Node(config, registry, supervisor, network)
            finally:
                root.close()
    except BaseExceptionGroup as group:
        error = unwrap(group)
        if error is group:
            raise
        raise error from error.__cause__  # keep an Escalation's cause (the child failure)
    finally:
        root.dispose()
        for name in TOPICS:  # the node has stopped: every subscription ends
            registry.topic(name).close()


async def _contract_ids(
    config: NodeConfig, names: list[str], registry: Registry, network: Network
) -> list[str]:
    """``names`` as contract ids: symbols looked up through the gateway, with the node's
    REST budget (a node without a gateway takes ids only)."""
    if config.gateway is None or all(map(is_contract_id, names)):
        return names
    return await resolve_contracts(
        names,
        config.gateway.auth(),
        transport=network.transport(),
        budget=rest_budget(config, registry),
    )


async def _run_root(
    supervisor: Supervisor, root: Mailbox[Any], *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run, root)
        await supervisor.started.wait()
        task_status.started()
