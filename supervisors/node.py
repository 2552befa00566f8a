"""The node: one declarative table of children, built into a supervisor tree.

``open_node(config, overrides)`` is the single entry point for embedding,
the CLI and tests. Each row of ``NODE_CHILDREN`` names an actor, how to build it
from the config, its restart type and its mailbox. Rows are in start order:
sinks first, sources last, so the ordered (reverse) shutdown stops the sources
first and every sink drains what was already accepted before it stops.

Any row can be replaced by name: ``overrides={"stats": fake}`` where ``fake``
is an actor object (``run(inbox, ctx)``) or a zero-argument factory of one.
Where the node's sockets and HTTP requests go is a seam of its own,
``network=Network(...)``: a test hands the real table an in-memory gateway
instead of replacing the live rows.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import psutil

from actors.account import AccountActor, AccountConfig
from actors.auth import AuthActor
from actors.bars import BarsActor
from actors.connection import BadCommand, Connect, ConnectionActor, HubConfig, SubscriptionBook
from actors.health import HealthActor
from actors.history import HistoryActor, HistoryConfig
from actors.nats_bridge import Cursor, NatsBridge, NatsSource, Outbox, require_asyncio
from actors.stats import StatsActor, dynamic_limits
from actors.tape import TapePlayer, TapeRecorder, open_tape, read_tape
from actors.validation import ValidationActor
from protocols.account import (
    AccountEvent,
    AccountInfo,
    AccountState,
    Fill,
    GetAccountState,
    OpenPosition,
    WorkingOrder,
)
from protocols.errors import AuthFailed, ConfigError, NotReady, TapeError, UnknownSeries
from protocols.health import GetHealth, HealthReport
from protocols.hubs import HubName, SubscribeAccount, SubscribeContract
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
from protocols.rest import RestBudget
from protocols.stats import StatsSnapshot
from protocols.timeframes import parse_timeframe

from .backoff import NO_BACKOFF, Backoff
from .breaker import BreakerPolicy
from .clock import ClockActor
from .config import GatewayConfig, NodeConfig
from .contracts import is_contract_id, resolve_contracts
from .mailbox import Mailbox, MailboxSpec, MailboxStatistics, OverflowPolicy
from .registry import Registry
from .supervisor import ChildSpec, RestartType, Supervisor, unwrap
from .topic import Subscription, Topic

if TYPE_CHECKING:
    import httpx
    import polars as pl

TOPICS = (
    "topic.events",
    "topic.trades",
    "topic.quotes",
    "topic.depth",
    "topic.user",
    "topic.account",
    "topic.bars",
    "topic.tokens",
    "topic.raw",
)
"""Broadcast points of a node; applications subscribe with their own mailbox policy."""


@dataclass(frozen=True, slots=True)
class Network:
    """Where a node's hub sockets and REST requests go; the defaults are the real network.

    ``connect(host, port)`` opens a hub's byte stream (default: TCP, with TLS for
    https/wss hubs). ``http()`` makes an httpx transport for each REST caller
    (auth, history, hub negotiation; default: httpx's own).
    """

    connect: Connect | None = None
    http: Callable[[], httpx.AsyncBaseTransport] | None = None

    def transport(self) -> httpx.AsyncBaseTransport | None:
        return self.http() if self.http is not None else None


@dataclass(frozen=True, slots=True)
class NodeChild:
    """One row of the node table.

    ``make(config, registry, network)`` runs once per node and returns the factory of
    the actor's incarnations, so state that must survive restarts (a hub's
    subscription book) is created once, explicitly, and handed to each new
    incarnation. ``attach`` lists topics the actor's own mailbox subscribes to.
    """

    name: str
    make: Callable[[NodeConfig, Registry, Network], Callable[[], Any]]
    mailbox: Callable[[NodeConfig], MailboxSpec]
    restart: RestartType = RestartType.PERMANENT
    shutdown: float = 5.0
    attach: tuple[str, ...] = ()
    enabled: Callable[[NodeConfig], bool] = lambda config: True
    backoff: Backoff = NO_BACKOFF
    breaker: BreakerPolicy | None = None
    fatal: tuple[type[Exception], ...] = ()


def _data_path(config: NodeConfig) -> MailboxSpec:
    return MailboxSpec(config.mailbox_capacity, OverflowPolicy.BLOCK)


def _conflating(capacity: int) -> Callable[[NodeConfig], MailboxSpec]:
    return lambda _: MailboxSpec(capacity, OverflowPolicy.DROP_OLDEST)


def _commands(_: NodeConfig) -> MailboxSpec:
    return MailboxSpec(256, OverflowPolicy.BLOCK)  # commands and tokens are never dropped


def _ring_size(config: NodeConfig) -> int:
    """``bars.ring_size``, lowered if the memory available now cannot hold every ring
    (never below ``exact_ring_size``, unless the config asks for less)."""
    cap = config.bars.ring_size
    return dynamic_limits(
        psutil.virtual_memory().available,
        max(1, len(config.contracts)),
        len(config.bars.timeframes),
        cap_ring=cap,
        floor=min(cap, exact_ring_size(config)),
    )


def exact_ring_size(config: NodeConfig) -> int:
    """The closed bars per series that exactness needs: a late trade may be
    ``stale_after`` older than the newest one, so the shortest frame keeps that
    span plus two bars."""
    shortest = min(
        (tf.fixed_us for tf in map(parse_timeframe, config.bars.timeframes) if tf.fixed_us),
        default=3_600_000_000,
    )
    return 2 + math.ceil(config.validation.stale_after * 1e6 / shortest)


def _live(config: NodeConfig) -> bool:
    return config.gateway is not None


def _clocked(config: NodeConfig) -> bool:
    """A wall clock ticks the node, unless there is none (replay) or time is a tape's."""
    return config.tick_interval > 0 and config.tape is None


def _gateway(config: NodeConfig) -> GatewayConfig:
    assert config.gateway is not None
    return config.gateway


def _rest_budget(config: NodeConfig, registry: Registry) -> RestBudget:
    """The node's one REST budget: every REST caller of the node waits on it."""
    return registry.shared("rest_budget", lambda: RestBudget(_gateway(config).rest_limits))


def _make_auth(config: NodeConfig, registry: Registry, network: Network) -> Callable[[], AuthActor]:
    auth = _gateway(config).auth()
    rng = random.Random(config.seed)
    budget = _rest_budget(config, registry)
    return lambda: AuthActor(auth, rng=rng, transport=network.transport(), budget=budget)


def _make_connection(
    hub: HubName,
) -> Callable[[NodeConfig, Registry, Network], Callable[[], Any]]:
    """The hub's subscription book is made once here and handed to every incarnation.

    Only one incarnation of a child runs at a time, so the book has one owner.
    """

    def make(config: NodeConfig, _: Registry, network: Network) -> Callable[[], ConnectionActor]:
        gateway = _gateway(config)
        url = gateway.market_hub if hub == "market" else gateway.user_hub
        hub_config = HubConfig(
            hub=hub,
            url=url,
            skip_negotiation=gateway.skip_negotiation,
            **msgspec.structs.asdict(gateway.hub_timings),
        )
        book = SubscriptionBook(hub)
        try:
            if hub == "market":
                for contract in config.contracts:
                    book.apply(SubscribeContract(contract))
            else:
                for account in gateway.accounts:
                    book.apply(SubscribeAccount(account))
        except BadCommand as error:  # what the hub would refuse is a config error, said now
            raise ConfigError(f"{hub} hub: {error}") from None
        return lambda: ConnectionActor(
            hub_config, book, connect=network.connect, http=network.transport()
        )

    return make


def subscribed_contracts(registry: Registry) -> set[str]:
    """The contracts a live node subscribed, shared by ``Node.subscribe`` and validation."""
    return registry.shared("subscribed_contracts", set)


def _make_validation(
    config: NodeConfig, registry: Registry, _: Network
) -> Callable[[], ValidationActor]:
    # Live, validation admits only subscribed contracts (the set outlives its restarts).
    subscribed = None
    if config.gateway is not None:
        subscribed = subscribed_contracts(registry)
        subscribed.update(config.contracts)
    return lambda: ValidationActor(config.validation, subscribed)


def _make_history(
    config: NodeConfig, registry: Registry, network: Network
) -> Callable[[], HistoryActor]:
    history = HistoryConfig(
        contracts=list(config.contracts),
        timeframes=list(config.bars.timeframes),
        api_url=_gateway(config).api_url,
        initial_bars=min(config.history_bars, config.bars.ring_size),
    )
    rng = random.Random(config.seed + 1)
    budget = _rest_budget(config, registry)
    return lambda: HistoryActor(history, transport=network.transport(), rng=rng, budget=budget)


def _make_account(
    config: NodeConfig, registry: Registry, network: Network
) -> Callable[[], AccountActor]:
    """Live, the actor also asks the REST searches (through the node's budget); from a
    tape it keeps what the tape's user frames say."""
    if config.gateway is None:
        return lambda: AccountActor(config.max_fills)
    gateway = config.gateway
    account = AccountConfig(
        api_url=gateway.api_url,
        accounts=list(gateway.accounts),
        fills_lookback=config.fills_lookback,
    )
    rng = random.Random(config.seed + 2)
    budget = _rest_budget(config, registry)
    return lambda: AccountActor(
        config.max_fills, config=account, transport=network.transport(), rng=rng, budget=budget
    )


def _make_bridge(config: NodeConfig, *_: Any) -> Callable[[], NatsBridge]:
    """The outbox outlives incarnations: what a lost connection left unacknowledged
    is published first by the next one (same ids, so JetStream drops repeats)."""
    assert config.nats is not None
    nats, outbox = config.nats, Outbox()
    return lambda: NatsBridge(nats, outbox)


def _bridge_mailbox(config: NodeConfig) -> MailboxSpec:
    assert config.nats is not None
    return MailboxSpec(config.nats.buffer, OverflowPolicy(config.nats.overflow))


def _make_player(config: NodeConfig, *_: Any) -> Callable[[], TapePlayer]:
    assert config.tape is not None
    path, speed = config.tape.path, config.tape.speed
    return lambda: TapePlayer(lambda counts: read_tape(path, counts), speed)


def _make_source(config: NodeConfig, *_: Any) -> Callable[[], NatsSource]:
    assert config.consume is not None
    consume, cursor = config.consume, Cursor()
    return lambda: NatsSource(consume, config.contracts, cursor)


HUB_BREAKER = BreakerPolicy(backoff=Backoff(min_backoff=0.5, max_backoff=30.0, jitter=0.2))
"""The default breaker (5 failures / 60 s, 30 s doubling to 300 s, 5 open cycles);
quick retries below it."""

NATS_BREAKER = BreakerPolicy(
    cooldown=5.0,
    max_cooldown=60.0,
    max_open_cycles=20,
    backoff=Backoff(min_backoff=0.5, max_backoff=10.0, jitter=0.2),
)
"""A NATS server restarts in seconds: shorter cool-downs than a gateway hub's, and
patience for a long outage (about 17 minutes) before the node gives up."""


NODE_CHILDREN: tuple[NodeChild, ...] = (
    # Reports are cumulative, so conflating them loses nothing.
    NodeChild(
        "stats",
        lambda config, *_: lambda: StatsActor(config.stats),
        _conflating(1024),
        attach=("topic.events",),
    ),
    NodeChild(
        "health",
        lambda config, *_: lambda: HealthActor(config.health_config()),
        _conflating(1024),
        attach=("topic.events", "topic.trades", "topic.quotes", "topic.depth"),
        # A node driven by a tape (no gateway, no clock) has no feed whose health to judge.
        enabled=lambda config: _live(config) or _clocked(config),
    ),
    # A sink of validation's user-hub frames (live or from a tape), so it starts before it;
    # before the hubs too: connection_user tells it each Connected (its REST sync follows).
    # Not on topic.events: a full BLOCK mailbox there would cost every subscriber events.
    NodeChild(
        "account",
        _make_account,
        lambda _: MailboxSpec(1024, OverflowPolicy.BLOCK),  # a lost order event is a wrong book
        attach=("topic.user",),
    ),
    # A sink of validation and bars: it starts before and stops after them, so whatever
    # they pass on while the node stops is still published.
    NodeChild(
        "nats_bridge",
        _make_bridge,
        _bridge_mailbox,
        attach=("topic.trades", "topic.quotes", "topic.depth", "topic.bars"),
        enabled=lambda config: config.nats is not None,
        breaker=NATS_BREAKER,
    ),
    NodeChild(
        "bars",
        lambda config, *_: (
            lambda: BarsActor(config.bars.timeframes, _ring_size(config), config.bars.grace)
        ),
        _data_path,
    ),
    NodeChild("validation", _make_validation, _data_path),
    NodeChild(
        "recorder",
        lambda config, *_: lambda: TapeRecorder(str(config.record)),
        lambda _: MailboxSpec(4096, OverflowPolicy.BLOCK),
        attach=("topic.raw",),
        enabled=lambda config: config.record is not None,
        fatal=(TapeError,),  # a full disk or a missing directory: restarts cannot help
    ),
    NodeChild(
        "clock",
        lambda config, registry, _: (
            lambda: ClockActor(
                registry,
                config.tick_interval,
                ("bars", "validation", "stats", "health", "recorder", "account"),
            )
        ),
        lambda _: MailboxSpec(1),
        enabled=_clocked,
    ),
    # Sources last: the ordered shutdown stops them first.
    NodeChild(
        "tape",
        _make_player,
        _commands,
        enabled=lambda config: config.tape is not None,
        # Played once: a restarted player could not resume, and play() would wait forever.
        fatal=(Exception,),
    ),
    NodeChild(
        "nats_source",
        _make_source,
        _commands,
        enabled=lambda config: config.consume is not None,
        breaker=NATS_BREAKER,
    ),
    NodeChild(
        "auth",
        _make_auth,
        _commands,
        enabled=_live,
        backoff=Backoff(min_backoff=1.0, max_backoff=60.0, jitter=0.2),
        fatal=(AuthFailed,),
    ),
    # After auth (it asks for tokens), before the hubs (it must see their first Connected).
    NodeChild(
        "history",
        _make_history,
        _conflating(256),  # only the market hub's Connected/Disconnected matter to it
        attach=("topic.events",),
        enabled=lambda config: _live(config) and bool(config.contracts),
    ),
    NodeChild(
        "connection_user",
        _make_connection("user"),
        _commands,
        shutdown=3.0,
        attach=("topic.tokens",),
        enabled=_live,
        breaker=HUB_BREAKER,
    ),
    NodeChild(
        "connection_market",
        _make_connection("market"),
        _commands,
        shutdown=3.0,
        attach=("topic.tokens",),
        enabled=_live,
        breaker=HUB_BREAKER,
    ),
)


class Node:
    """A running node: refs, topics and snapshots. Obtain one from ``open_node``."""

    def __init__(self, config: NodeConfig, registry: Registry, supervisor: Supervisor) -> None:
        self.config = config
        self.registry = registry
        self.supervisor = supervisor
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
        """Subscribe quotes, trades and depth of ``contracts`` (kept across reconnects),
        and build ``timeframes`` too from now on (checked here: ``ConfigError``).

        New series are back-filled from history like those configured at start."""
        names = [parse_timeframe(name).name for name in timeframes]
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
        missing: list[str] = []
        with anyio.move_on_after(timeout):
            while True:
                missing = await self._not_ready()
                if not missing:
                    return
                await anyio.sleep(0.05)
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
    if config.gateway is not None and not all(map(is_contract_id, config.contracts)):
        ids = await resolve_contracts(
            list(config.contracts),
            config.gateway.auth(),
            transport=network.transport(),
            budget=_rest_budget(config, registry),
        )
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
                yield Node(config, registry, supervisor)
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


async def _run_root(
    supervisor: Supervisor, root: Mailbox[Any], *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run, root)
        await supervisor.started.wait()
        task_status.started()
