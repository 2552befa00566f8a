"""Health actor: stale-feed watchdog, one reconnect per episode, truthful verdict, bounds."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.health import HealthActor, HealthConfig, ScoreWeights
from protocols.errors import ConfigError, MailboxClosed, MailboxFull
from protocols.health import GetHealth, HealthReport
from protocols.hubs import Connected, Disconnected, HeartbeatMeasured, ReconnectRequested
from protocols.messages import (
    BreakerState,
    BreakerTransitioned,
    ChildExited,
    ChildHealthy,
    ChildRestarting,
    ChildStarted,
    CountersReported,
    DepthAccepted,
    DepthsAccepted,
    Flush,
    QuoteAccepted,
    QuotesAccepted,
    Request,
    Stop,
    SupervisorEscalated,
    Tick,
    Trade,
    TradesAccepted,
)
from pxnode.testing import FakeContext, RecordingRef
from supervisors.backoff import Backoff
from supervisors.breaker import BreakerPolicy
from supervisors.mailbox import Mailbox, MailboxSpec
from supervisors.ref import MailboxRef
from supervisors.registry import Registry
from supervisors.supervisor import ChildSpec, Supervisor

EPOCH = 1_700_000_000.0
A = "CON.F.US.MNQ.Z25"
B = "CON.F.US.MES.Z25"
STALE = 30.0


# ------------------------------------------------------------------ doubles


def FakeCtx() -> FakeContext:
    """Health's context: the market hub and stats recorded; absent actors are a KeyError."""
    return FakeContext(
        "health", [RecordingRef("connection_market"), RecordingRef("stats")], wall=wall
    )


def wall() -> float:
    return EPOCH + anyio.current_time()


class Harness:
    def __init__(self, mailbox: Mailbox[Any], ctx: FakeContext) -> None:
        self.mailbox = mailbox
        self.ctx = ctx
        self.ref: MailboxRef[Any] = MailboxRef(mailbox)

    def send(self, *msgs: Any) -> None:
        for msg in msgs:
            self.mailbox.send_nowait(msg)

    async def health(self) -> HealthReport:
        report = await self.ref.ask(GetHealth(), timeout=1.0)
        assert isinstance(report, HealthReport)
        return report

    async def tick(self) -> HealthReport:
        self.send(Tick(self.ctx.wall_time()))
        return await self.health()

    @property
    def requests(self) -> list[Any]:
        return self.ctx.told("connection_market")

    @property
    def stats(self) -> list[Any]:
        return self.ctx.told("stats")

    def up(self, hub: str = "market", incarnation: int = 1) -> None:
        """The connection child started, connected and reported healthy."""
        child = f"connection_{hub}"
        self.send(
            ChildStarted("node", child, incarnation),
            Connected(hub, f"{hub}-{incarnation}"),  # type: ignore[arg-type]
            ChildHealthy("node", child),
        )

    def quote(self, contract: str = A) -> None:
        self.send(QuotesAccepted([QuoteAccepted(contract, 0, self.ctx.wall_time(), last=1.0)]))


@asynccontextmanager
async def running(config: HealthConfig | None = None) -> AsyncIterator[Harness]:
    ctx = FakeCtx()
    mailbox: Mailbox[Any] = Mailbox("health", MailboxSpec(1024))
    actor = HealthActor(config or HealthConfig(contracts=[A]))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor.run, mailbox, ctx)
            yield Harness(mailbox, ctx)
            mailbox.close()
    finally:
        mailbox.dispose()


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "fields",
    [
        {"stale_after": 0},
        {"stale_after": -1.0},
        {"stale_after": math.nan},
        {"stale_after": math.inf},
        {"stale_after": True},
        {"report_interval": 0.0},
        {"rtt_good": 5.0, "rtt_bad": 5.0},
        {"weights": ScoreWeights(latency=0.0)},
        {"weights": ScoreWeights(breaker=math.nan)},
        {"max_contracts": 0},
        {"max_contracts": True},
        {"rtt_window": 10**6},
        {"max_reasons": 1.5},
        {"hubs": []},
        {"hubs": ["market", "market"]},
        {"hubs": ["chat"]},
        {"hubs": [["market"]]},
        {"contracts": [""]},
        {"contracts": ["x" * 201]},
        {"contracts": [A, B], "max_contracts": 1},
    ],
)
def test_bad_config_is_a_config_error(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        HealthConfig(**fields)


def test_config_decodes_from_json_and_forbids_unknown_fields() -> None:
    config = msgspec.json.decode(b'{"stale_after": 10, "hubs": ["market"]}', type=HealthConfig)
    assert config.stale_after == 10 and config.hubs == ["market"] and config.contracts == []
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"stale_afte": 10}', type=HealthConfig)
    with pytest.raises(ConfigError, match="must be a finite number"):
        msgspec.json.decode(b'{"stale_after": -1}', type=HealthConfig)


# --------------------------------------------------------------- stale feed


@pytest.mark.trio
async def test_stale_feed_detected_after_exactly_stale_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as h:
        h.up()
        h.quote()
        await h.health()
        await trio.sleep(STALE)
        report = await h.tick()
        assert not h.requests  # exactly stale_after of silence is not stale yet
        assert report.hubs["market"].healthy and not report.hubs["market"].stale
        await trio.sleep(0.001)
        report = await h.tick()
        assert h.requests == [ReconnectRequested("market", "stale feed: no data for 30 s")]
        assert not report.hubs["market"].healthy and report.hubs["market"].stale
        assert not report.healthy and report.components.freshness == 0.0
        assert "market: stale feed: no data for 30 s" in report.reasons
        assert report.hubs["market"].reconnect_requests == 1
        assert report.counters["stale_episodes"] == 1


@pytest.mark.trio
async def test_a_consuming_nodes_feed_is_its_stream_and_is_never_reconnected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A node consuming NATS has no hub: it was judged on two that never connect, so it
    was unhealthy for ever. Its feed is the stream its source reads; reconnecting that
    cannot make an ingest node publish, so a stale stream is reported, not reconnected."""
    async with running(HealthConfig(contracts=[A], hubs=["stream"])) as h:
        h.send(
            ChildStarted("node", "nats_source", 1),
            Connected("stream"),
            ChildHealthy("node", "nats_source"),
        )
        h.quote()
        report = await h.tick()
        assert report.healthy and report.score == 1.0 and list(report.hubs) == ["stream"]
        await trio.sleep(STALE + 1)
        report = await h.tick()
        assert not report.healthy and report.hubs["stream"].stale
        assert "stream: stale feed: no data for 31 s" in report.reasons
        assert not h.requests
        h.send(ChildExited("node", "nats_source", "failed", "NATS lost"))
        report = await h.health()
        assert not report.hubs["stream"].connected and not report.hubs["stream"].child_healthy


@pytest.mark.trio
async def test_quiet_since_connect_counts_when_no_data_ever_came(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as h:
        h.up()
        await trio.sleep(STALE)
        assert (await h.tick()).hubs["market"].healthy and not h.requests
        await trio.sleep(1)
        report = await h.tick()
        assert report.feed_age is None and report.contracts[A].last_event_age is None
        assert h.requests == [ReconnectRequested("market", "stale feed: no data for 31 s")]


@pytest.mark.trio
async def test_one_request_per_episode_until_connected_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as h:
        h.up()
        for _ in range(600):  # ten minutes of 1 s ticks, the connection ignores the request
            await trio.sleep(1)
            await h.tick()
        assert len(h.requests) == 1
        report = await h.health()
        assert report.hubs["market"].stale and not report.healthy
        h.send(Disconnected("market", "reconnect requested"), Connected("market", "m-2"))
        await trio.sleep(STALE)
        await h.tick()
        assert len(h.requests) == 1  # a new connection gets stale_after of grace
        await trio.sleep(1)
        await h.tick()
        assert len(h.requests) == 2
        assert (await h.health()).hubs["market"].reconnects == 1


@pytest.mark.trio
async def test_fresh_data_ends_the_episode(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as h:
        h.up()
        await trio.sleep(STALE + 1)
        await h.tick()
        assert len(h.requests) == 1
        # Data received before the request (late in a mailbox) proves nothing.
        h.send(QuotesAccepted([QuoteAccepted(A, 0, h.ctx.wall_time() - 5, last=1.0)]))
        await trio.sleep(STALE)
        await h.tick()
        assert len(h.requests) == 1
        h.quote()
        report = await h.tick()
        assert report.hubs["market"].healthy and not report.hubs["market"].stale
        await trio.sleep(STALE + 1)
        await h.tick()
        assert len(h.requests) == 2
        assert (await h.health()).counters["stale_episodes"] == 2


@pytest.mark.trio
async def test_failed_request_is_retried_at_most_once_per_stale_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as h:
        market = h.ctx.refs["connection_market"]
        market.fail = anyio.WouldBlock()
        h.up()
        await trio.sleep(STALE + 1)
        await h.tick()
        for _ in range(29):
            await trio.sleep(1)
            await h.tick()
        assert (await h.health()).counters["reconnect_failed"] == 1
        for fail in (MailboxFull("full"), MailboxClosed("gone"), None):
            market.fail = fail
            await trio.sleep(1)
            await h.tick()
            await trio.sleep(STALE - 1)
            await h.tick()
        report = await h.health()
        assert report.counters["reconnect_failed"] == 3
        assert len(h.requests) == 1 and report.counters["reconnect_requests"] == 1
        del h.ctx.refs["connection_market"]  # no connection actor at all
        h.send(Connected("market", "m-2"))
        await trio.sleep(STALE + 1)
        assert (await h.tick()).counters["reconnect_failed"] == 4


@pytest.mark.trio
async def test_no_request_while_disconnected(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as h:
        h.up()
        h.send(Disconnected("market", "eof"))
        for _ in range(10):
            await trio.sleep(STALE)
            report = await h.tick()
        assert not h.requests
        market = report.hubs["market"]
        assert not market.stale and not market.connected and not market.healthy
        assert "market: disconnected (eof)" in report.reasons
        h.send(ChildExited("node", "connection_market", "failed", "boom"))
        h.up(incarnation=2)
        await trio.sleep(STALE + 1)
        await h.tick()
        assert len(h.requests) == 1


@pytest.mark.trio
async def test_no_request_while_unsubscribed(autojump_clock: trio.testing.MockClock) -> None:
    async with running(HealthConfig()) as h:  # no contracts expected
        h.up()
        h.up("user")
        for _ in range(10):
            await trio.sleep(STALE)
            report = await h.tick()
        assert not h.requests
        assert report.healthy and report.score == 1.0 and report.contracts == {}
        h.quote(B)  # a contract producing data counts as subscribed from now on
        await trio.sleep(STALE + 1)
        report = await h.tick()
        assert len(h.requests) == 1 and report.contracts[B].fresh is False


@pytest.mark.trio
async def test_a_quiet_contract_is_reported_but_does_not_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(HealthConfig(contracts=[A, B])) as h:
        h.up()
        h.up("user")
        for _ in range(20):
            h.quote(A)
            await trio.sleep(5)
            report = await h.tick()
        assert not h.requests
        assert report.healthy and not report.hubs["market"].stale
        assert report.contracts[A].fresh and not report.contracts[B].fresh
        assert report.contracts[B].last_event_age is None
        assert report.components.freshness == 0.5 and report.score < 1.0
        assert report.reasons == [f"contract {B}: no data yet"]
        h.quote(B)
        await trio.sleep(STALE + 5)
        h.quote(A)
        report = await h.tick()
        assert report.reasons == [f"contract {B}: no data for 35 s"]


@pytest.mark.trio
async def test_future_received_at_cannot_keep_a_dead_feed_fresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as h:
        h.up()
        h.send(QuotesAccepted([QuoteAccepted(A, 0, h.ctx.wall_time() + 1e9, last=1.0)]))
        await trio.sleep(STALE + 1)
        report = await h.tick()
        assert len(h.requests) == 1 and report.counters["future_clamped"] == 1


@pytest.mark.trio
async def test_far_future_tick_cannot_silence_requests_or_reports(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as h:
        h.up()
        h.send(Tick(EPOCH + 1e12))
        await trio.sleep(STALE + 1)
        report = await h.tick()
        assert len(h.requests) == 1 and len(h.stats) == 2
        assert report.counters["future_clamped"] == 1


# ------------------------------------------------------------- the verdict


def _breaker_path(state: BreakerState) -> list[BreakerTransitioned]:
    child = "connection_market"
    path = [BreakerTransitioned("node", child, "closed", "open", 30.0)]
    if state == "open":
        return path
    path.append(BreakerTransitioned("node", child, "open", "half_open"))
    if state == "closed":
        path.append(BreakerTransitioned("node", child, "half_open", "closed"))
    return path


@pytest.mark.trio
@pytest.mark.parametrize(
    ("connected", "breaker", "child_healthy", "stale"),
    list(
        itertools.product(
            [True, False], ["closed", "open", "half_open"], [True, False], [True, False]
        )
    ),
)
async def test_truth_table(
    autojump_clock: trio.testing.MockClock,
    connected: bool,
    breaker: BreakerState,
    child_healthy: bool,
    stale: bool,
) -> None:
    async with running() as h:
        h.up("user")
        h.send(ChildStarted("node", "connection_market", 1), Connected("market", "m-1"))
        h.send(*_breaker_path(breaker))
        if child_healthy:
            h.send(ChildHealthy("node", "connection_market"))
        # A stale feed needs a connection; for the disconnected rows it is the
        # silence before the disconnect that must not leak into the verdict.
        await trio.sleep(STALE + 1 if stale else 1)
        if not connected:
            h.send(Disconnected("market", "eof"))
        report = await h.tick()
        market = report.hubs["market"]
        expected = connected and breaker == "closed" and child_healthy and not stale
        assert market.healthy is expected
        assert report.healthy is expected
        assert (market.connected, market.breaker, market.child_healthy) == (
            connected,
            breaker,
            child_healthy,
        )
        assert market.stale is (stale and connected)
        if expected:
            assert report.score == 1.0 and report.reasons == []
        else:
            assert report.score < 1.0 and report.reasons


@pytest.mark.trio
async def test_every_event_order_of_a_restart_ends_unhealthy_until_healthy_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    child = "connection_market"
    restart = [
        ChildExited("node", child, "failed", "boom"),
        ChildRestarting("node", child, 1, 0.5),
        ChildStarted("node", child, 2),
        Connected("market", "m-2"),
    ]
    opened = BreakerTransitioned("node", child, "closed", "open", 30.0)
    async with running() as h:
        for events in (restart, [*restart, opened]):
            for order in itertools.permutations(events):
                h.up()
                h.send(BreakerTransitioned("node", child, "open", "closed"))
                h.send(*order)
                assert not (await h.health()).hubs["market"].healthy, order
                h.send(ChildHealthy("node", child))
                market = (await h.health()).hubs["market"]
                # Healthy again only if the socket came back after the exit, breaker closed.
                came_back = order.index(restart[3]) > order.index(restart[0])
                assert market.healthy is (came_back and opened not in order), order


@pytest.mark.trio
async def test_exit_clears_connected_and_start_clears_child_healthy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as h:
        h.up()
        h.send(ChildExited("node", "connection_market", "failed", "boom"))
        market = (await h.health()).hubs["market"]
        assert not market.connected and not market.child_healthy
        assert "market: disconnected (connection actor exited)" in (await h.health()).reasons
        h.send(ChildStarted("node", "connection_market", 2), Connected("market", "m-2"))
        market = (await h.health()).hubs["market"]
        assert market.connected and not market.child_healthy and not market.healthy
        h.send(ChildHealthy("node", "connection_market"))
        market = (await h.health()).hubs["market"]
        assert market.healthy and market.connects == 2 and market.reconnects == 1
        assert market.connection_id == "m-2"


class FlakyConnection:
    """A connection double: rejected handshakes, or a healthy feed of quotes."""

    def __init__(self, works: bool) -> None:
        self._works = works

    async def run(self, inbox: Any, ctx: Any) -> None:
        events = ctx.ref("topic.events")
        events.tell_nowait(Connected("market", "c"))
        await anyio.sleep(0.1 if not self._works else 1.0)
        if not self._works:
            raise RuntimeError("handshake rejected")
        ctx.report_healthy()
        while True:
            events.tell_nowait(QuotesAccepted([QuoteAccepted(A, 0, ctx.wall_time(), last=1.0)]))
            await anyio.sleep(1)


@pytest.mark.trio
async def test_real_supervisor_breaker_cycle_is_reported_truthfully(
    autojump_clock: trio.testing.MockClock,
) -> None:
    works = iter([False] * 5 + [True])
    policy = BreakerPolicy(
        failure_threshold=5, cooldown=30, jitter=0, backoff=Backoff(0, 0, jitter=0)
    )
    registry = Registry()
    config = HealthConfig(hubs=["market"], contracts=[A])
    sup = Supervisor(
        "node",
        [
            ChildSpec("health", lambda: HealthActor(config), mailbox=MailboxSpec(256)),
            ChildSpec(
                "connection_market",
                lambda: FlakyConnection(next(works)),
                breaker=policy,
                shutdown=0,
            ),
        ],
        registry=registry,
    )
    registry.topic("topic.events").attach(registry.mailbox("health"))
    root: Mailbox[Any] = Mailbox("root", MailboxSpec(1))
    seen = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run, root)
        await sup.started.wait()
        for at in (10.0, 31.0, 40.0):  # open; half-open probe not yet healthy; closed
            await trio.sleep_until(at)
            report = await registry.ref("health").ask(GetHealth(), timeout=1.0)
            m = report.hubs["market"]
            seen.append((m.breaker, m.connected, m.child_healthy, m.healthy, report.healthy))
        root.close()
    root.dispose()
    assert seen == [
        ("open", False, False, False, False),
        ("half_open", True, False, False, False),
        ("closed", True, True, True, True),
    ]


@pytest.mark.trio
async def test_breaker_transitions_are_reflected(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as h:
        h.up()
        h.up("user")
        assert (await h.health()).healthy
        child = "connection_user"
        seen = []
        for old, new in (("closed", "open"), ("open", "half_open"), ("half_open", "closed")):
            h.send(BreakerTransitioned("node", child, old, new))  # type: ignore[arg-type]
            report = await h.health()
            seen.append((report.hubs["user"].breaker, report.components.breaker, report.healthy))
        assert seen == [("open", 0.5, False), ("half_open", 0.75, False), ("closed", 1.0, True)]
        assert "user: circuit breaker open" not in report.reasons
        # Other children's breakers are stats' business, not the hubs' verdict.
        h.send(BreakerTransitioned("node", "auth", "closed", "open"))
        assert (await h.health()).healthy


@pytest.mark.trio
async def test_unwatched_hub_is_not_judged(autojump_clock: trio.testing.MockClock) -> None:
    async with running(HealthConfig(hubs=["market"], contracts=[A])) as h:
        h.up()
        h.send(Disconnected("user", "eof"), ChildExited("node", "connection_user", "failed"))
        report = await h.health()
        assert report.healthy and list(report.hubs) == ["market"]
        assert report.counters["unwatched"] == 1


@pytest.mark.trio
async def test_not_connected_yet_is_unhealthy(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as h:
        report = await h.health()
        assert not report.healthy
        assert report.components.connectivity == 0 and report.components.readiness == 0
        assert "market: not connected yet" in report.reasons
        assert "user: connection not healthy since its last start" in report.reasons
        assert h.ctx.healthy == 1


# -------------------------------------------------------- latency, reports


@pytest.mark.trio
async def test_heartbeat_window_and_latency_score(autojump_clock: trio.testing.MockClock) -> None:
    async with running(HealthConfig(contracts=[A], rtt_window=4)) as h:
        h.up()
        h.up("user")
        h.send(*(HeartbeatMeasured("market", rtt) for rtt in (9.0, 0.1, 0.2, 0.3, 0.4)))
        market = (await h.health()).hubs["market"]
        assert (market.rtt_samples, market.rtt_p50, market.rtt_max) == (4, 0.2, 0.4)
        assert (await h.health()).score == 1.0
        h.send(*(HeartbeatMeasured("user", 2.75) for _ in range(4)))
        report = await h.health()
        assert report.components.latency == 0.75  # mean of market 1.0 and user 0.5
        assert report.healthy and report.score < 1.0
        assert report.reasons == ["user: heartbeat round trip p50 2750 ms"]
        assert report.hubs["user"].last_event_age == 0.0


@pytest.mark.trio
async def test_get_health_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as h:
        h.up()
        h.quote()
        await trio.sleep(2)
        report = await h.health()
        assert report.taken_at == EPOCH + trio.current_time()
        assert report.feed_age == 2.0 and report.contracts[A].last_event_age == 2.0
        decoded = msgspec.json.decode(msgspec.json.encode(report), type=HealthReport)
        assert decoded == report
        counters = await h.ref.ask(Flush(), timeout=1.0)
        assert counters["quotes"] == 1 and counters["requests"] == 1


@pytest.mark.trio
async def test_counters_reported_to_stats_every_interval_and_on_stop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(HealthConfig(contracts=[A], report_interval=10.0)) as h:
        h.up()
        for _ in range(25):
            await trio.sleep(1)
            await h.tick()
        assert len(h.stats) == 3  # at 1 s, 11 s and 21 s
        report = h.stats[-1]
        assert isinstance(report, CountersReported) and report.source == "health"
        assert "." not in report.source
        assert report.counters["ticks"] == 21 and 0 <= report.gauges["score"] < 1
        assert report.gauges["market_connected"] == 1.0
        h.ctx.refs["stats"].fail = MailboxFull("full")
        await trio.sleep(10)
        assert (await h.tick()).counters["reports_failed"] == 1
        h.ctx.refs["stats"].fail = None
        h.send(Stop())
    assert len(h.stats) == 4  # the last one on Stop


@pytest.mark.trio
async def test_inbox_end_returns_after_a_last_report(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for with_stats in (True, False):
        ctx = FakeCtx()
        if not with_stats:
            del ctx.refs["stats"]  # no stats actor: counted, not raised
        mailbox: Mailbox[Any] = Mailbox("health", MailboxSpec(8))
        mailbox.send_nowait(Tick(EPOCH))
        mailbox.close()
        actor = HealthActor()
        with trio.fail_after(1):
            await actor.run(mailbox, ctx)
        mailbox.dispose()
        if with_stats:
            last = ctx.told("stats")[-1]
            assert isinstance(last, CountersReported) and last.counters["ticks"] == 1
        else:
            assert actor.report(EPOCH).counters["reports_failed"] >= 1


@pytest.mark.anyio
async def test_runs_on_both_backends(anyio_backend: str) -> None:
    ctx = FakeCtx()
    mailbox: Mailbox[Any] = Mailbox("health", MailboxSpec(16))
    h = Harness(mailbox, ctx)
    async with anyio.create_task_group() as tg:
        tg.start_soon(HealthActor(HealthConfig(hubs=["market"], contracts=[A])).run, mailbox, ctx)
        h.up()
        h.quote()
        report = await h.tick()
        assert report.healthy and report.score == 1.0 and len(h.stats) == 1
        mailbox.close()
    mailbox.dispose()


# --------------------------------------------------------------- bounds, odd


@pytest.mark.trio
async def test_memory_stays_bounded_with_1e5_contracts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = HealthConfig(max_contracts=1000, max_reasons=5)
    async with running(config) as h:
        h.up()
        h.up("user")
        wall = h.ctx.wall_time()
        for start in range(0, 100_000, 10_000):
            trades = [Trade(f"C{i}", 0, 1.0, 1, 0, wall) for i in range(start, start + 10_000)]
            h.send(TradesAccepted(trades))
        report = await h.health()
        assert len(report.contracts) == 1000 and report.counters["contracts_dropped"] == 99_000
        assert report.counters["trades"] == 100_000
        h.quote("C99999")  # untracked, but alive
        await trio.sleep(STALE)
        h.quote("C99999")
        await trio.sleep(1)
        report = await h.tick()
        assert not h.requests and report.healthy  # the feed is alive
        assert len(report.contracts) == 1000 and len(report.reasons) == 5
        assert report.reasons[-1] == "... and 996 more"
        assert report.components.freshness == 0.0


def odd_messages(closed_reply: RecordingRef) -> list[Any]:
    return [
        # unknown: 7
        "hello",
        42,
        None,
        object(),
        b"\x00",
        Request(body="x", reply=None),
        DepthAccepted(A, EPOCH, []),  # an item, not the message that carries it
        # invalid: 26
        Request(body=GetHealth(), reply=None),
        Connected(5, "x"),  # type: ignore[arg-type]
        Connected("chat", "x"),  # type: ignore[arg-type]
        HeartbeatMeasured("market", math.nan),
        HeartbeatMeasured("market", -1.0),
        HeartbeatMeasured("market", 1e9),
        HeartbeatMeasured("market", True),
        HeartbeatMeasured("market", 10**400),  # an int beyond any float
        HeartbeatMeasured("market", "1"),  # type: ignore[arg-type]
        Tick(math.nan),
        Tick(None),  # type: ignore[arg-type]
        Tick(math.inf),
        Tick(10**400),
        TradesAccepted(None),  # type: ignore[arg-type]
        TradesAccepted(
            [1, Trade(5, 0, 1.0, 1, 0, EPOCH), Trade(A, 0, 1.0, 1, 0, math.nan)]  # type: ignore[arg-type, list-item]
        ),
        QuotesAccepted(None),  # type: ignore[arg-type]
        QuotesAccepted(
            [
                1,  # type: ignore[list-item]
                QuoteAccepted(None, 0, EPOCH),  # type: ignore[arg-type]
                QuoteAccepted(A, 0, "now"),  # type: ignore[arg-type]
                QuoteAccepted("x" * 10_000, 0, EPOCH),
            ]
        ),
        DepthsAccepted(None),  # type: ignore[arg-type]
        DepthsAccepted([DepthAccepted(A, -math.inf, [])]),
        ChildStarted("node", None, 1),  # type: ignore[arg-type]
        BreakerTransitioned("node", "connection_market", "closed", "melted"),  # type: ignore[arg-type]
        # accepted, with the odd field replaced
        Request(body=GetHealth(), reply=closed_reply),
        Connected("market", 7),  # type: ignore[arg-type]
        Disconnected("market", None),  # type: ignore[arg-type]
        SupervisorEscalated("hubs", "gave up"),
    ]


@pytest.mark.trio
async def test_odd_input_is_counted_never_raised(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as h:
        h.up()
        h.up("user")
        h.quote()
        closed_reply = RecordingRef("reply")
        closed_reply.fail = anyio.ClosedResourceError()
        h.send(*odd_messages(closed_reply))
        report = await h.health()
        c = report.counters
        assert (c["unknown"], c["invalid"], c["replies_failed"]) == (7, 26, 1)
        assert c["escalations"] == 1 and (c["trades"], c["quotes"], c["depth"]) == (3, 5, 1)
        market = report.hubs["market"]
        assert market.connects == 2 and market.connection_id is None
        assert not market.connected and "market: disconnected (no reason given)" in report.reasons
        assert market.breaker == "closed" and market.rtt_samples == 0
        assert report.contracts.keys() == {A}
        assert h.stats == []  # no odd Tick got through


# ---------------------------------- batched trades, quotes and depth, per item


def SansIoCtx() -> FakeContext:
    """A fixed wall clock, so two actors fed alike report alike."""
    return FakeContext(
        "health", [RecordingRef("connection_market"), RecordingRef("stats")], wall=lambda: EPOCH
    )


NAMES = [B, "C", A, "D"]
ODD_NAMES: list[Any] = ["", "x" * 201, 5, None, ["unhashable"]]
STAMPS = [EPOCH - 40.0, EPOCH - 1.0, EPOCH, EPOCH + 1e9, int(EPOCH) - 2]  # stale .. future
ODD_STAMPS: list[Any] = [math.nan, math.inf, -math.inf, True, "now", 10**400]
# (contract, received_at) of a data item, or an object that is no item at all
data_items = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(NAMES) | st.sampled_from(ODD_NAMES),
            st.sampled_from(STAMPS) | st.sampled_from(ODD_STAMPS),
        ),
        st.sampled_from([None, 7, "item"]),
    ),
    max_size=40,
)


def fed(messages: list[Any]) -> HealthActor:
    actor = HealthActor(HealthConfig(contracts=[A], max_contracts=2))
    ctx = SansIoCtx()
    for hub in ("market", "user"):
        actor.on_message(Connected(hub, f"{hub}-1"), ctx)
    for msg in messages:
        actor.on_message(msg, ctx)
    return actor


def judged(actor: HealthActor, now: float) -> HealthReport:
    """The report at ``now``, counting data items alike whatever their kind."""
    report = actor.report(now)
    counters = dict(report.counters)
    counters["items"] = sum(counters.pop(key, 0) for key in ("trades", "quotes", "depth"))
    return msgspec.structs.replace(report, counters=counters)


def trades_accepted(items: list[Any]) -> TradesAccepted:
    return TradesAccepted(
        [Trade(i[0], 0, 1.0, 1, 0, i[1]) if type(i) is tuple else i for i in items]
    )


def quotes_accepted(items: list[Any]) -> QuotesAccepted:
    return QuotesAccepted([QuoteAccepted(i[0], 0, i[1]) if type(i) is tuple else i for i in items])


def depths_accepted(items: list[Any]) -> DepthsAccepted:
    return DepthsAccepted([DepthAccepted(i[0], i[1], []) if type(i) is tuple else i for i in items])


@pytest.mark.parametrize("batch", [trades_accepted, quotes_accepted, depths_accepted])
@settings(max_examples=200, deadline=None)
@given(items=data_items, size=st.integers(1, 5))
def test_a_batch_is_judged_exactly_like_one_message_per_item(
    batch: Callable[[list[Any]], Any], items: list[Any], size: int
) -> None:
    batches = [batch(items[i : i + size]) for i in range(0, len(items), size)]
    # The per-item oracle: each item checked, clamped and recorded in a message of its own.
    single = [depths_accepted([item]) for item in items]
    batched, one_by_one = fed(batches), fed(single)
    for now in (EPOCH, EPOCH + 50.0):  # later, a clamped stamp shows its age
        assert judged(batched, now) == judged(one_by_one, now)


def test_batched_trades_are_counted_per_trade() -> None:
    stamps = [EPOCH - 5, EPOCH - 3, EPOCH + 100, EPOCH + 200, math.nan]
    batch: list[Any] = [Trade(c, 0, 1.0, 1, 0, at) for c in (A, B, "C") for at in stamps]
    unhashable = Trade(["x"], 0, 1.0, 1, 0, EPOCH)  # type: ignore[arg-type]
    batch += [unhashable, Trade("x" * 201, 0, 1.0, 1, 0, EPOCH + 9), 3]
    report = fed([TradesAccepted(batch)]).report(EPOCH)
    c = report.counters
    # 2 contracts fit (A configured, then B); C's 4 valid trades are dropped one by one.
    counted = ("trades", "invalid", "future_clamped", "contracts_dropped")
    assert [c[key] for key in counted] == [18, 6, 6, 4]
    assert report.contracts.keys() == {A, B}
    later = fed([TradesAccepted(batch)]).report(EPOCH + 50.0)
    assert later.contracts[A].last_event_age == 50.0  # the future stamps, clamped to now
    assert later.feed_age == 50.0
