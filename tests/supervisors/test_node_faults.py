"""Every fault of the live path is a passing test: a whole node against the sim, in virtual time.

See ``pxnode.testing.sim_node`` for the wiring (the real node table, an
in-memory network). Faults are injected with ``GatewaySim.apply`` (or by
refusing dials), and the node is judged only by what an application
sees: topics, ``node.health()``, ``node.stats()``, and whether ``open_node``
raises, with the sim's own record (``MarketSim.recent_trades``, its tokens,
its REST log) as the ground truth.
"""

from __future__ import annotations

import itertools
import logging
import re
from typing import Any
from unittest import mock

import anyio
import pytest

from actors.connection import HubTimings
from actors.health import HealthConfig
from protocols.errors import AuthFailed, Escalation
from protocols.health import HealthReport
from protocols.hubs import HUBS, Connected, Disconnected
from protocols.messages import (
    BreakerTransitioned,
    ChildRestarting,
    ChildStarted,
    SupervisorEscalated,
    TokenIssued,
    Trade,
    TradesAccepted,
)
from protocols.stats import render_prometheus
from pxnode.sim import Fault, SimConfig
from pxnode.testing import (
    ACCOUNT,
    API_KEY,
    ES,
    MNQ,
    SimNode,
    Tap,
    node_config,
    node_tasks,
    sim_node,
    until,
)
from supervisors.mailbox import MailboxSpec, OverflowPolicy

_BAD = re.compile(r"\.bad\.|frames_(malformed|unknown)|rejected")

Key = tuple[int, float, int, int]  # (ts µs, price, volume, side): a trade as both sides see it


def connected(h: SimNode, hub: str = "market") -> int:
    return sum(1 for e in h.events.of(Connected) if e.hub == hub)


def accepted(tap: Tap) -> list[Trade]:
    """Every trade validation accepted, from a tap on ``topic.trades``."""
    return [t for m in tap.take() if isinstance(m, TradesAccepted) for t in m.trades]


async def healthy(h: SimNode, limit: float = 10.0) -> HealthReport:
    """The first healthy report within ``limit`` seconds."""
    with anyio.fail_after(limit):
        while not (report := await h.node.health()).healthy:  # noqa: ASYNC110 - a snapshot
            await anyio.sleep(0.25)
    return report


def is_subsequence(items: list[Key], truth: list[Key]) -> list[Key]:
    """The truth items ``items`` skips, if ``items`` is an in-order subsequence of ``truth``.

    Greedy matching is exact here: equal keys are interchangeable, so taking the
    earliest match never makes a later item unmatchable.
    """
    skipped: list[Key] = []
    it = iter(truth)
    for item in items:
        for candidate in it:
            if candidate == item:
                break
            skipped.append(candidate)
        else:
            raise AssertionError(f"{item} is not in the truth (or out of order, or a duplicate)")
    return skipped


# ---------------------------------------------------------------- 1. drop


@pytest.mark.trio
async def test_drop_reconnects_resubscribes_and_loses_or_repeats_nothing(
    autojump_clock: Any,
) -> None:
    """Expectation: every trade the sim emitted while the market socket was subscribed
    is accepted exactly once and in order; trades emitted between the drop and the
    resubscription were never sent and are absent (the node back-fills bars, not trades).
    So the accepted trades of each contract are the ground truth minus one gap, and
    that gap lies inside [drop - 0.5 s, resubscribed + 0.5 s]."""
    async with sim_node() as h:
        with h.node.topic("topic.trades").subscribe(
            "test", MailboxSpec(1 << 16, OverflowPolicy.BLOCK)
        ) as trades:
            await until(lambda: connected(h) == 1)
            await anyio.sleep(10)
            dropped_at = h.wall()
            h.sim.apply(Fault("drop", 0.0))
            await until(lambda: connected(h) == 2)
            back_at = h.wall()
            await anyio.sleep(10)
            cut = h.wall()
            await anyio.sleep(1)  # everything emitted before ``cut`` has arrived
            got: list[Trade] = [
                t for m in trades.drain(1 << 30) if isinstance(m, TradesAccepted) for t in m.trades
            ]
        for contract in (MNQ, ES):
            mine = [(t.ts, t.price, t.volume, t.side) for t in got if t.contract == contract]
            mine = [k for k in mine if k[0] < cut * 1e6]
            truth = [
                (s.ts, s.price, s.volume, s.side)
                for s in h.sim.sim.recent_trades(contract, since=mine[0][0] / 1e6, until=cut)
            ]
            skipped = is_subsequence(mine, truth)
            assert skipped, "the outage lost nothing: was the socket really down?"
            assert all(dropped_at - 0.5 <= k[0] / 1e6 <= back_at + 0.5 for k in skipped)
            assert mine[-1][0] / 1e6 > back_at  # data flows again after the gap
        (disconnect,) = [e for e in h.events.of(Disconnected) if e.hub == "market"]
        assert "EOF" in disconnect.reason
        # one restart (the first start predates the tap)
        starts = [e for e in h.events.of(ChildStarted) if e.child == "connection_market"]
        assert [e.incarnation for e in starts] == [2]
        (session,) = [c.session for c in h.sim.connections if c.session.hub == "market"]
        assert session.subscriptions == {k: {MNQ, ES} for k in ("quotes", "trades", "depth")}


# ---------------------------------------------------------------- 2. stall


@pytest.mark.trio
@pytest.mark.parametrize(
    ("hub", "health", "why", "within"),
    [
        # the connection's own watchdog: silent since the last frame, just before the stall
        ({"server_timeout": 30.0}, HealthConfig(stale_after=300), "frozen", (29, 30)),
        # health's: stale after 30 s, seen on the next tick, then a clean close that the
        # stalled server cannot answer (close_timeout 2 s)
        ({"server_timeout": 300.0}, HealthConfig(stale_after=30), "stale feed", (30, 32.5)),
    ],
    ids=["server_timeout", "stale_feed"],
)
async def test_a_stall_is_detected_and_data_flows_again(
    autojump_clock: Any,
    hub: dict[str, Any],
    health: HealthConfig,
    why: str,
    within: tuple[float, float],
) -> None:
    async with sim_node(config=node_config(health=health, hub_timings=HubTimings(**hub))) as h:
        trades = Tap(h.node, "topic.trades")
        await until(lambda: accepted(trades))
        stalled_at = anyio.current_time()
        h.sim.apply(Fault("stall", 0.0, 40.0))
        await until(lambda: [e for e in h.events.of(Disconnected) if e.hub == "market"])
        (lost,) = [e for e in h.events.of(Disconnected) if e.hub == "market"]
        assert why in lost.reason
        assert within[0] <= anyio.current_time() - stalled_at <= within[1]
        before = len(accepted(trades))
        await until(lambda: len(accepted(trades)) > before + 10)
        assert connected(h) == 2
        assert 40 <= anyio.current_time() - stalled_at <= 45
        trades.dispose()


# ------------------------------------------------------- 3. expiry, revocation


@pytest.mark.trio
@pytest.mark.parametrize("kind", ["expire", "revoke"])
async def test_a_dead_token_is_replaced_and_the_hubs_resubscribe(
    autojump_clock: Any, kind: str
) -> None:
    """The sim closes both hubs (SignalR Close) and refuses the old token from then on.
    The reconnect's negotiation gets a 401, which asks auth for a refresh; auth logs in
    again (the old token cannot be validated either), and both hubs come back with the
    new token and everything they had subscribed, without the application asking."""
    async with sim_node() as h:
        trades = Tap(h.node, "topic.trades")
        tokens = Tap(h.node, "topic.tokens")
        await until(lambda: connected(h, "market") == connected(h, "user") == 1)
        await anyio.sleep(20)  # auth refuses to refetch a token younger than 10 s
        assert len(h.net.tokens) == 1
        h.sim.apply(Fault(kind, 0.0))  # type: ignore[arg-type]
        await until(lambda: connected(h, "market") == connected(h, "user") == 2)
        before = len(accepted(trades))
        await until(lambda: len(accepted(trades)) > before + 10)

        assert len(h.net.calls("/api/Auth/loginKey")) == 2  # one refresh for both hubs
        old, new = h.net.tokens
        assert [t.token.reveal() for t in tokens.of(TokenIssued)] == [new]
        assert h.sim.tokens.check(old) == f"{kind}d"
        lost = {hub: [e.reason for e in h.events.of(Disconnected) if e.hub == hub] for hub in HUBS}
        for reasons in lost.values():
            assert "the server closed the hub: Unauthorized" in reasons[0]
        # whichever hub retried first met the 401 and asked for the refresh
        assert [r for rs in lost.values() for r in rs[1:]] == [mock.ANY]
        assert "HTTP 401" in next(r for rs in lost.values() for r in rs[1:])
        sessions = {c.session.hub: c.session for c in h.sim.connections}
        assert sessions["market"].subscriptions == {
            k: {MNQ, ES} for k in ("quotes", "trades", "depth")
        }
        assert sessions["user"].subscriptions == {
            "accounts": {0},
            **{k: {ACCOUNT} for k in ("orders", "positions", "trades")},
        }
        report = await h.node.health()
        assert report.healthy, report.reasons
        trades.dispose()
        tokens.dispose()


# ------------------------------------------------------------ 4. REST 429/500


@pytest.mark.trio
async def test_login_rides_out_429_and_500(autojump_clock: Any) -> None:
    """Two 429s (Retry-After: 1) then a 500 (backoff 1 s x 2**2, less up to 10 % jitter):
    the fourth login succeeds, inside auth's own retries, and the hubs connect with it."""
    faults = (Fault("rest429", 0.0, 2.0), Fault("rest500", 0.0, 1.0))
    async with sim_node(faults=faults) as h:
        await until(lambda: connected(h, "market") == connected(h, "user") == 1)
        logins = h.net.calls("/api/Auth/loginKey")
        assert [c.status for c in logins] == [429, 429, 500, 200]
        gaps = [b.at - a.at for a, b in itertools.pairwise(logins)]
        assert gaps[:2] == [pytest.approx(1.0), pytest.approx(1.0)]
        assert 3.6 <= gaps[2] <= 4.0
        assert not [e for e in h.events.of(ChildStarted) if e.child == "auth"]  # no restart
        assert len(h.net.tokens) == 1
        report = await h.node.health()
        assert report.hubs["market"].connected and report.hubs["user"].connected


# ----------------------------------------------------------- 5. the breaker


def transitions(h: SimNode, child: str = "connection_market") -> list[BreakerTransitioned]:
    return [e for e in h.events.of(BreakerTransitioned) if e.child == child]


@pytest.mark.trio
async def test_breaker_opens_cools_down_probes_and_closes_once_data_flows(
    autojump_clock: Any,
) -> None:
    async with sim_node(refused=("market",)) as h:
        await until(lambda: transitions(h))
        opened_at = anyio.current_time()
        (opened,) = transitions(h)
        assert (opened.old, opened.new) == ("closed", "open")
        assert 27 <= opened.cooldown <= 33  # 30 s, jittered by up to 10 %
        assert len(h.net.hub_dials("market")) == 5  # 5 failures within 60 s
        assert h.net.hub_dials("market")[-1] - h.net.hub_dials("market")[0] < 60

        report = await h.node.health()  # open: neither the hub nor the node is healthy
        assert not report.healthy and report.hubs["market"].breaker == "open"
        assert report.hubs["user"].healthy  # the other hub is not affected

        h.net.refused.clear()  # the gateway is back; nobody dials until the cool-down ends
        await until(lambda: len(transitions(h)) == 3)
        probe, closed = transitions(h)[1:]
        assert (probe.old, probe.new, closed.old, closed.new) == (
            "open", "half_open", "half_open", "closed"
        )  # fmt: skip
        dials = h.net.hub_dials("market")
        assert len(dials) == 6 and dials[-1] - opened_at == pytest.approx(opened.cooldown, abs=0.1)
        report = await healthy(h)
        assert report.hubs["market"].breaker == "closed" and report.hubs["market"].connects == 1


@pytest.mark.trio
async def test_a_gateway_that_never_comes_back_escalates_after_k_open_cycles(
    autojump_clock: Any,
) -> None:
    """Cool-downs 30, 60, 120, 240, 300 s (doubling, capped, +-10 %); the fifth probe's
    failure is the end: ``open_node`` raises ``Escalation`` out of the block."""
    started = anyio.current_time()
    # ~13 minutes of nothing: slow clocks on both sides keep it cheap
    sim = SimConfig(seed=3, rate=5.0, contracts=(MNQ, ES), tick=0.5)
    config = node_config(tick_interval=5.0)
    seen: list[SimNode] = []
    with pytest.raises(Escalation, match="5 open cycles without recovery"):
        async with sim_node(config=config, sim=sim, refused=("market",)) as h:
            seen.append(h)
            await anyio.sleep_forever()
    (h,) = seen
    moves = [(t.old, t.new) for t in transitions(h)]
    assert moves == [("closed", "open")] + [("open", "half_open"), ("half_open", "open")] * 4 + [
        ("open", "half_open")
    ]
    cooldowns = [t.cooldown for t in transitions(h) if t.new == "open"]
    assert cooldowns == [pytest.approx(c, rel=0.1) for c in (30, 60, 120, 240, 300)]
    elapsed = anyio.current_time() - started
    assert sum(cooldowns) < elapsed < sum(cooldowns) + 10  # + the 5 quick failures' backoff
    assert len(h.net.hub_dials("market")) == 5 + 5  # the quick failures, then one per probe
    (escalated,) = h.events.of(SupervisorEscalated)
    assert escalated.supervisor == "node"


# ------------------------------------------------ 6. malformed and oversize


@pytest.mark.trio
async def test_malformed_and_oversize_frames_are_counted_and_survived(
    autojump_clock: Any,
) -> None:
    async with sim_node() as h:
        trades = Tap(h.node, "topic.trades")
        await until(lambda: accepted(trades))
        h.sim.apply(Fault("malformed", 0.0, 8.0))  # one of each kind of damage
        h.sim.apply(Fault("oversize", 0.0, float(2 << 20)))  # 2 MiB > the 1 MiB frame cap
        before = len(accepted(trades))
        await until(lambda: len(accepted(trades)) > before + 10)
        await anyio.sleep(2)  # counters reach stats every second
        counters = (await h.node.stats()).counters
        # each bad frame is counted once, by whoever could tell it was bad
        assert {k: v for k, v in counters.items() if v and _BAD.search(k)} == {
            "connection_market.bad.bad_json": 1,  # cut short
            "connection_market.bad.bad_shape": 2,  # arguments not an array; message type 99
            "connection_market.bad.too_large": 1,  # the oversize depth frame
            "validation.frames_malformed": 1,  # wrong arity
            "validation.frames_unknown_target": 1,  # GatewayMystery
            "validation.trades_rejected.price": 2,  # wrong types; infinite price
            "validation.quotes_rejected.price": 1,  # NaN-ish quote
        }
        assert counters["connection_market.invocations.other"] == 1
        # ... and none of them cost the socket
        assert connected(h) == 1 and not h.events.of(Disconnected)
        assert not [e for e in h.events.of(ChildStarted) if e.child.startswith("connection")]
        trades.dispose()


# ------------------------------------------------- 7. shutdown mid-reconnect


@pytest.mark.trio
@pytest.mark.parametrize(
    "phase",
    [
        "cool-down",  # breaker open: no market child, a timer to cancel
        "backoff",  # market child failed, its restart delay pending
        # A connection keeps reading its inbox while it connects: the end of its mailbox
        # cancels the connect at once, none of its 3 s shutdown grace is used.
        "dial",  # the market hub's dial hangs
        "login",  # auth sleeps between 429s; both hubs wait for a token
    ],
)
async def test_shutdown_mid_reconnect_is_prompt_and_leaves_nothing_running(
    autojump_clock: Any, phase: str
) -> None:
    faults = (Fault("rest429", 0.0, 1000.0),) if phase == "login" else ()
    async with sim_node(refused=("market",) if phase == "cool-down" else (), faults=faults) as h:
        if phase == "cool-down":
            await until(lambda: transitions(h))  # open: no child, a 30 s timer pending
        elif phase in ("backoff", "dial"):
            await until(lambda: connected(h) == 1)
            h.net.hanging.add("market.sim")
            h.sim.apply(Fault("drop", 0.0))
            await until(lambda: h.events.of(ChildRestarting))  # restart due in ~0.5 s
            if phase == "dial":
                await until(lambda: len(h.net.hub_dials("market")) == 2)  # hangs (10 s limit)
        else:
            await until(lambda: len(h.net.calls("/api/Auth/loginKey")) == 2)  # in retry sleep
        running = node_tasks()
        assert "supervisors.supervisor.Supervisor.run" in running  # the census sees the node
    assert h.stopped is not None
    took, at = h.stopped
    assert took <= 0.01
    assert h.left_running == [] and h.left_open == 0
    # no timer of the node fires after it stopped: no dial, no REST call
    assert all(t <= at + took for t, _ in h.net.dials)
    assert all(c.at <= at + took for c in h.net.rest)


# ------------------------------------------------------- 8. bad credentials


@pytest.mark.trio
async def test_rejected_credentials_escalate_at_once_without_a_retry_storm(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    started = anyio.current_time()
    seen: list[SimNode] = []
    with pytest.raises(Escalation, match="'auth' failed") as caught:
        async with sim_node(config=node_config(api_key="not-the-key")) as h:
            seen.append(h)
            await anyio.sleep_forever()
    (h,) = seen
    # Decided at once (t=0); leaving the block takes the ordered shutdown, in which each
    # connection, stuck in its token ask, uses up its 3 s grace before it is cancelled.
    (escalated,) = h.events.of(SupervisorEscalated)
    assert "'auth' failed" in escalated.reason
    assert anyio.current_time() - started <= 2 * 3.0
    assert not h.events.of(ChildRestarting)  # no backoff, no breaker cycle
    assert [c.status for c in h.net.calls("/api/Auth/loginKey")] == [200]  # success: false
    assert h.net.dials == []  # no hub was dialled without a token
    assert isinstance(caught.value.__cause__, AuthFailed)
    for text in (str(caught.value), repr(caught.value), str(caught.value.__cause__), caplog.text):
        assert "not-the-key" not in text


# ------------------------------------------------------------- 9. secrets


@pytest.mark.trio
async def test_no_token_and_no_api_key_in_logs_events_stats_or_metrics(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A faulty session (429 on login, drop, expiry, 401s, malformed frames, revocation),
    logged at DEBUG throughout; then every text the node produced is searched."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with sim_node(faults=(Fault("rest429", 0.0, 1.0),)) as h:
        tokens = Tap(h.node, "topic.tokens")
        raw = Tap(h.node, "topic.raw")
        await until(lambda: connected(h) == 1)
        h.sim.apply(Fault("malformed", 0.0, 8.0))
        for n, fault in enumerate(("drop", "expire", "revoke"), start=2):
            await anyio.sleep(15)
            h.sim.apply(Fault(fault, 0.0))  # type: ignore[arg-type]
            await until(lambda n=n: connected(h) == n)
        await healthy(h)
        await anyio.sleep(2)
        snapshot = await h.node.stats()
        texts += [repr(snapshot), render_prometheus(snapshot), repr(await h.node.health())]
        texts += [repr(h.node), repr(h.node.mailbox_statistics())]
        texts += [repr(m) for m in tokens.take()]
        assert len(tokens.of(TokenIssued)) == 3  # the login (after its 429), two refreshes
        assert len(raw.take()) > 100
        tokens.dispose()
        raw.dispose()
    texts += [repr(e) for e in h.events.take()]
    texts += [caplog.text, *(repr(vars(r)) for r in caplog.records)]
    assert len(h.net.tokens) == 3
    secrets = [API_KEY]
    for token in h.net.tokens:
        _, payload, signature = token.split(".")
        secrets += [token, payload, signature]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert "Unauthorized" in caplog.text and "DEBUG" in {r.levelname for r in caplog.records}


# -------------------------------------------------------------- 10. health


@pytest.mark.trio
async def test_health_is_truthful_through_a_stall_and_the_recovery(autojump_clock: Any) -> None:
    """The connection's own watchdog is set beyond the stall, so only health can see it:
    stale after 30 s of silence (and it asks for a reconnect), disconnected while the
    stalled server cannot finish the new handshake, healthy again once data flows.
    At every sample a healthy verdict must match the sim: a market session subscribed
    at the gateway, and not a feed silent for longer than ``stale_after`` (+ one tick)."""
    config = node_config(
        health=HealthConfig(stale_after=30), hub_timings=HubTimings(server_timeout=120.0)
    )
    async with sim_node(config=config) as h:
        await healthy(h)
        stalled_at = anyio.current_time()
        h.sim.apply(Fault("stall", 0.0, 45.0))
        samples: list[tuple[float, HealthReport]] = []
        while (t := anyio.current_time() - stalled_at) < 60:
            report = await h.node.health()
            samples.append((t, report))
            if report.healthy:
                subscribed = [
                    c
                    for c in h.sim.connections
                    if c.session.hub == "market" and c.session.subscriptions
                ]
                assert subscribed, "healthy without a market session at the gateway"
                assert not 30.25 < t < 45, "healthy while the feed was stale"
            await anyio.sleep(0.25)
    verdicts = [(t, r.healthy) for t, r in samples]
    assert all(ok for t, ok in verdicts if t < 30)  # silence within stale_after is no outage
    stale = next(r for t, r in samples if t > 30.5)
    assert not stale.healthy and stale.hubs["market"].stale
    assert [r for r in stale.reasons if r.startswith("market: stale feed: no data for")]
    assert stale.hubs["market"].reconnect_requests == 1
    gone = next(r for t, r in samples if t > 40)
    assert not gone.healthy and not gone.hubs["market"].connected
    back = next(t for t, r in samples if t > 40 and r.healthy)
    assert 45 <= back <= 46
    assert all(ok for t, ok in verdicts if t > back)
    last = samples[-1][1]
    assert last.hubs["market"].connects == 2 and last.feed_age is not None and last.feed_age < 1


@pytest.mark.trio
async def test_a_fail_subscriber_that_never_reads_only_hurts_itself(
    autojump_clock: object,
) -> None:
    async with sim_node() as h:
        strict_trades = h.node.stream_trades(capacity=4, policy=OverflowPolicy.FAIL)
        strict_events = h.node.stream_events(capacity=2, policy=OverflowPolicy.FAIL)
        trades = Tap(h.node, "topic.trades")
        await anyio.sleep(60)
        seen = len(trades.take())
        await anyio.sleep(10)
        assert len(trades.take()) > seen  # the feed goes on
        stats = await h.node.stats()
        assert all(child.failures == 0 for child in stats.children.values())
        for topic in ("topic.trades", "topic.events"):
            assert h.node.topic(topic).statistics().failed == 1
    assert len(strict_trades.drain(100)) == 4 and len(strict_events.drain(100)) == 2
    for sub in (strict_trades, strict_events, trades):
        sub.dispose()
