"""The node's table: one row per child, how to build it from the config.

Each row of ``NODE_CHILDREN`` names an actor, how to build it from the config,
its restart type and its mailbox. Rows are in start order: sinks first,
sources last, so the ordered (reverse) shutdown stops the sources first and
every sink drains what was already accepted before it stops. ``open_node``
(``supervisors.node``) turns the rows a config enables into a supervisor tree.

Where the node's sockets and HTTP requests go is a seam of its own,
``Network``: a test hands the real table an in-memory gateway instead of
replacing the live rows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import psutil

from actors.account import AccountActor, AccountConfig
from actors.auth import AuthActor
from actors.bars import BarsActor
from actors.connection import BadCommand, Connect, ConnectionActor, HubConfig, SubscriptionBook
from actors.health import HealthActor
from actors.history import HistoryActor, HistoryConfig
from actors.nats_bridge import Cursor, DurableInUse, NatsBridge, NatsSource, Outbox
from actors.stats import StatsActor, dynamic_limits
from actors.tape import TapePlayer, TapeRecorder, read_tape
from actors.validation import ValidationActor
from protocols.errors import AuthFailed, ConfigError, TapeError
from protocols.hubs import HubName, SubscribeAccount, SubscribeContract
from protocols.rest import RestBudget
from protocols.timeframes import parse_timeframe

from .backoff import NO_BACKOFF, Backoff
from .breaker import BreakerPolicy
from .clock import ClockActor
from .config import GatewayConfig, NodeConfig
from .mailbox import MailboxSpec, OverflowPolicy
from .registry import Registry
from .supervisor import RestartType

if TYPE_CHECKING:
    import httpx

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


def rest_budget(config: NodeConfig, registry: Registry) -> RestBudget:
    """The node's one REST budget: every REST caller of the node waits on it."""
    return registry.shared("rest_budget", lambda: RestBudget(_gateway(config).rest_limits))


def _make_auth(config: NodeConfig, registry: Registry, network: Network) -> Callable[[], AuthActor]:
    auth = _gateway(config).auth()
    rng = random.Random(config.seed)
    budget = rest_budget(config, registry)
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
    # A stream's or stream tape's trades were accepted once already (see ValidationActor).
    judged = config.consume is not None or (config.tape is not None and config.tape.judged)
    return lambda: ValidationActor(config.validation, subscribed, judged_upstream=judged)


def _make_history(
    config: NodeConfig, registry: Registry, network: Network
) -> Callable[[], HistoryActor]:
    history = HistoryConfig(
        contracts=list(config.contracts),
        timeframes=list(config.bars.timeframes),
        api_url=_gateway(config).api_url,
        initial_bars=min(config.history_bars, config.bars.ring_size),
        # Validation takes trades up to max_future ahead of the node's clock: the cut must
        # lie beyond any of them, or those that reached bars before it was told are lost.
        cut_margin=config.validation.max_future + 1.0,
    )
    rng = random.Random(config.seed + 1)
    budget = rest_budget(config, registry)
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
    budget = rest_budget(config, registry)
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
    contracts, timeframes = config.contracts, config.bars.timeframes
    # A trade up to stale_after older than a newer one is accepted, into a bar open for grace.
    reach_back = config.validation.stale_after + config.bars.grace
    return lambda: NatsSource(
        consume, contracts, cursor, timeframes, config.tick_interval, reach_back
    )


CLOCKED = ("validation", "stats", "health", "recorder", "account")
"""The clock's children besides ``bars``: they act on time (reports, stale feeds)."""

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
            lambda: BarsActor(
                config.bars.timeframes,
                _ring_size(config),
                config.bars.grace,
                latency=config.tape is None,
            )
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
                # A consuming node's bars close on the stream's time: its source ticks them.
                CLOCKED if config.consume is not None else ("bars", *CLOCKED),
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
        fatal=(DurableInUse,),  # another process consumes it: restarts cannot help
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
