"""Stats actor: cumulative reports, rates, latencies, bounds, TTL, supervision, Prometheus."""

from __future__ import annotations

import errno
import gc
import math
import random
import re
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import SimpleNamespace
from typing import Any

import anyio
import msgspec
import psutil
import pytest
import trio
import trio.testing

from actors.stats import BAR_BYTES, StatsActor, StatsConfig, dynamic_limits
from protocols.errors import ConfigError
from protocols.mailboxes import MailboxStatistics, OverflowPolicy
from protocols.messages import (
    BreakerTransitioned,
    ChildExited,
    ChildHealthy,
    ChildRestarting,
    ChildStarted,
    CountersReported,
    GetStats,
    MailboxesSampled,
    Request,
    Stop,
    SupervisorEscalated,
    Tick,
)
from protocols.stats import (
    ChildStats,
    LatencySummary,
    StatsSnapshot,
    metric_name,
    render_prometheus,
)
from pxnode.testing import FakeContext, MemoryInbox

WALL_EPOCH = 1_700_000_000.0


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


# ------------------------------------------------------------------ doubles


def FakeCtx() -> FakeContext:
    """Stats reaches no other actor: every ref is a KeyError."""
    return FakeContext("stats", wall=lambda: WALL_EPOCH + anyio.current_time())


class Reply:
    """A one-shot reply channel, like the runtime's."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[Any](1)

    def try_tell(self, msg: Any) -> bool:
        self._send.send_nowait(msg)
        return True

    async def get(self) -> Any:
        with self._send, self._receive:
            return await self._receive.receive()


class FakeProcess:
    def __init__(self, rss: int = 50_000_000, cpu: float = 12.5, fail: bool = False) -> None:
        self.rss, self.cpu, self.fail, self.samples = rss, cpu, fail, 0
        self.error: Exception = psutil.AccessDenied()

    @contextmanager
    def oneshot(self) -> Iterator[None]:
        yield

    def memory_info(self) -> Any:
        self.samples += 1
        if self.fail:
            raise self.error
        return SimpleNamespace(rss=self.rss)

    def cpu_percent(self, interval: float | None) -> float:
        assert interval is None  # never blocks the actor
        return self.cpu


class Harness:
    def __init__(self, actor: StatsActor, inbox: MemoryInbox, ctx: FakeContext) -> None:
        self.actor, self.inbox, self.ctx = actor, inbox, ctx

    async def tell(self, *msgs: Any) -> None:
        for msg in msgs:
            await self.inbox.send(msg)

    async def stats(self) -> StatsSnapshot:
        reply = Reply()
        await self.inbox.send(Request(body=GetStats(), reply=reply))
        snapshot = await reply.get()
        assert isinstance(snapshot, StatsSnapshot)
        return snapshot

    def report(self, source: str, **kw: Any) -> None:
        """Feed a report straight to the hook (bulk tests; still inside the event loop)."""
        self.actor.on_counters_reported(
            CountersReported(source=source, counters=kw.pop("counters", {}), **kw)
        )


@asynccontextmanager
async def running(config: StatsConfig | None = None, process: Any = None) -> AsyncIterator[Harness]:
    actor = StatsActor(config, process=process or FakeProcess())
    inbox, ctx = MemoryInbox(), FakeCtx()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(actor.run, inbox, ctx)
            yield Harness(actor, inbox, ctx)
            await inbox.send(Stop())
    finally:
        inbox.close()


def report(source: str, counters: Any = None, **kw: Any) -> CountersReported:
    return CountersReported(source=source, counters={} if counters is None else counters, **kw)


# ----------------------------------------------------------- round trip, run


@pytest.mark.trio
async def test_get_stats_round_trip_and_stop() -> None:
    async with running() as h:
        await h.tell(report("validation", {"trades_accepted": 3}, gauges={"last_price": 1.5}))
        snap = await h.stats()
        assert h.ctx.healthy == 1
    assert snap.counters == {"validation.trades_accepted": 3}
    assert snap.gauges == {"validation.last_price": 1.5}
    assert snap.rss_bytes == 50_000_000 and snap.cpu_percent == 12.5
    assert snap.taken_at == pytest.approx(WALL_EPOCH + snap.uptime_s + h.actor._started)
    # the JSON line of the node is the snapshot encoded; it decodes back unchanged
    assert msgspec.json.decode(msgspec.json.encode(snap), type=StatsSnapshot) == snap


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_round_trip_on_asyncio_with_real_psutil() -> None:
    async with running(process=psutil.Process()) as h:
        await h.tell(Tick(now=0.0))
        snap = await h.stats()
    assert snap.rss_bytes > 1_000_000 and snap.cpu_percent >= 0.0


@pytest.mark.trio
async def test_stop_returns_and_closed_inbox_returns() -> None:
    inbox, ctx = MemoryInbox(), FakeCtx()
    first, second = StatsActor(process=FakeProcess()), StatsActor(process=FakeProcess())
    try:
        await inbox.send(Stop())
        await first.run(inbox, ctx)
        await inbox.send(report("late", {"x": 1}))
        inbox.close_sending()
        await second.run(inbox, ctx)  # drains what is queued, then returns on end-of-stream
        assert second.snapshot(0.0).counters == {"late.x": 1}
    finally:
        inbox.close()


@pytest.mark.trio
async def test_bad_requests_and_unknown_messages_are_counted() -> None:
    class GoneReply:
        def try_tell(self, msg: Any) -> bool:
            return False  # the asker timed out

    async with running() as h:
        await h.tell(
            Request(body=GetStats(), reply=GoneReply()),
            Request(body=GetStats(), reply=object()),
            Request(body="what", reply=object()),
            "junk",
            42,
            None,
        )
        snap = await h.stats()
    assert snap.dropped == {"replies": 1, "invalid": 1, "unknown": 4}


# ------------------------------------------------------- cumulative reports


@pytest.mark.trio
async def test_cumulative_reports_replace_not_add() -> None:
    async with running() as h:
        await h.tell(report("bars", {"closed": 5, "gone_later": 1}))
        await h.tell(report("bars", {"closed": 7}))
        await h.tell(report("validation", {"rejected.spike": 2}))
        snap = await h.stats()
    assert snap.counters == {"bars.closed": 7, "validation.rejected.spike": 2}


@pytest.mark.trio
async def test_malformed_reports_are_counted_never_raise() -> None:
    async with running() as h:
        await h.tell(
            report("has.dot", {"a": 1}),  # ambiguous snapshot key
            report("x" * 201, {"a": 1}),  # name too long
            report("", {"a": 1}),
            report(7, {"a": 1}),  # type: ignore[arg-type]
            report("s", [1, 2]),  # counters not a dict
            report("s", {}, gauges=None),
        )
        await h.tell(
            report(
                "ok",
                {
                    "good": 1,
                    "negative": -1,
                    "float": 1.5,
                    "bool": True,
                    "huge": 2**64,
                    "str": "5",
                    3: 4,
                    "": 1,
                },
                gauges={
                    "g": 2,
                    "nan": math.nan,
                    "inf": math.inf,
                    "s": "x",
                    "b": False,
                    "i": 10**400,
                },
                latencies={"lat": [0.001, math.nan, -1.0, "x", math.inf, True, 10**400], "bad": 5},
            )
        )
        snap = await h.stats()
    assert snap.counters == {"ok.good": 1}
    assert snap.gauges == {"ok.g": 2.0}
    assert snap.latencies["ok.lat"].count == 1
    # 6 bad reports, 7 bad counters, 5 bad gauges, 6 bad samples, 1 bad latency entry
    # (an int beyond any float is no crash: it is no finite number)
    assert snap.dropped == {"invalid": 6 + 7 + 5 + 6 + 1}


# --------------------------------------------------------------------- rates


@pytest.mark.trio
async def test_rates_over_the_window_in_virtual_time(autojump_clock: Any) -> None:
    config = StatsConfig(rate_window=10.0, rate_bucket=1.0)
    async with running(config) as h:
        await h.tell(report("feed", {"trades": 1_000, "quiet": 0}))  # baseline: no increase
        assert (await h.stats()).rates == {"feed.trades": 0.0, "feed.quiet": 0.0}
        for i in range(1, 31):
            await anyio.sleep(1.0)
            await h.tell(report("feed", {"trades": 1_000 + 20 * i, "quiet": 0}))
        snap = await h.stats()
        assert snap.rates == {"feed.trades": 20.0, "feed.quiet": 0.0}
        assert snap.uptime_s == pytest.approx(30.0)

        # the source restarted: its counter fell to 5, which is an increase of 5
        await anyio.sleep(1.0)
        await h.tell(report("feed", {"trades": 5}))
        await anyio.sleep(1.0)
        assert (await h.stats()).rates["feed.trades"] == pytest.approx((9 * 20 + 5) / 10)

        # nothing more happens: the window empties
        await anyio.sleep(10.0)
        await h.tell(report("feed", {"trades": 5}))
        assert (await h.stats()).rates == {"feed.trades": 0.0}


@pytest.mark.trio
async def test_rate_of_a_new_counter_counts_from_zero_and_ramps_up(autojump_clock: Any) -> None:
    async with running(StatsConfig(rate_window=4.0, rate_bucket=0.5)) as h:
        await h.tell(report("feed", {}))
        for i in range(1, 5):
            await anyio.sleep(0.5)
            await h.tell(report("feed", {"new": 3 * i}))
        await anyio.sleep(0.5)
        # one increase of 3 per 0.5 s bucket since the counter appeared
        assert (await h.stats()).rates["feed.new"] == pytest.approx(6.0)


# ----------------------------------------------------------------- latencies


def exact_quantile(ordered: list[float], q: float) -> float:
    return ordered[int(q * (len(ordered) - 1))]


@pytest.mark.trio
@pytest.mark.parametrize(
    "draw",
    [
        lambda r: r.lognormvariate(-7.0, 1.0),  # ~1 ms, heavy right tail
        lambda r: r.expovariate(1 / 0.02),
        lambda r: r.uniform(0.0005, 0.0015),
        lambda r: 0.003,  # constant: every quantile is exact
    ],
    ids=["lognormal", "exponential", "uniform", "constant"],
)
async def test_latency_quantiles_within_the_stated_error(draw: Any) -> None:
    config = StatsConfig(latency_error=0.01)
    rng = random.Random(1234)
    samples = [draw(rng) for _ in range(25_000)]
    async with running(config) as h:
        for i in range(0, len(samples), 5_000):
            h.report("bars", latencies={"trade_to_bar": samples[i : i + 5_000]})
        lat = (await h.stats()).latencies["bars.trade_to_bar"]
    ordered = sorted(samples)
    tolerance = config.latency_error * (1 + 1e-9)
    assert lat.count == lat.window_count == len(samples)
    assert lat.sum == pytest.approx(math.fsum(samples))
    assert lat.max == ordered[-1]
    assert lat.p50 == pytest.approx(exact_quantile(ordered, 0.5), rel=tolerance)
    assert lat.p99 == pytest.approx(exact_quantile(ordered, 0.99), rel=tolerance)


@pytest.mark.trio
async def test_latency_values_outside_the_range_clamp_to_the_observed_extremes() -> None:
    async with running(StatsConfig(latency_min=1e-3, latency_max=1.0)) as h:
        h.report("a", latencies={"low": [0.0, 0.0, 0.0], "high": [50.0, 50.0, 70.0]})
        lat = (await h.stats()).latencies
    assert (lat["a.low"].p50, lat["a.low"].p99, lat["a.low"].max) == (0.0, 0.0, 0.0)
    assert lat["a.high"].p50 == 50.0 and lat["a.high"].max == 70.0


@pytest.mark.trio
async def test_latency_quantiles_cover_the_last_one_or_two_windows(autojump_clock: Any) -> None:
    async with running(StatsConfig(latency_window=60.0, source_ttl=1e6)) as h:
        await h.tell(report("a", latencies={"x": [1.0] * 10}))
        await anyio.sleep(60.0)
        await h.tell(Tick(now=0.0), report("a", latencies={"x": [0.001] * 10}))
        lat = (await h.stats()).latencies["a.x"]
        assert (lat.window_count, lat.max) == (20, 1.0)  # the old spike is still in view
        await anyio.sleep(60.0)
        await h.tell(Tick(now=0.0))
        lat = (await h.stats()).latencies["a.x"]
        assert (lat.window_count, lat.max, lat.p99) == (10, 0.001, 0.001)
        await anyio.sleep(60.0)
        await h.tell(Tick(now=0.0))
        lat = (await h.stats()).latencies["a.x"]
    assert (lat.count, lat.window_count, lat.p50, lat.p99, lat.max) == (20, 0, 0.0, 0.0, 0.0)
    assert lat.sum == pytest.approx(10.01)


# -------------------------------------------------------------------- bounds


def traced_growth(feed: Any) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        feed()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.trio
async def test_distinct_sources_beyond_the_cap_are_counted_not_stored() -> None:
    config = StatsConfig(max_sources=64)
    async with running(config) as h:
        for i in range(64):
            h.report(f"src{i}", counters={"n": i})

        def overflow() -> None:
            for i in range(100_000):
                h.report(f"extra{i}", counters={"n": i})

        growth = traced_growth(overflow)
        snap = await h.stats()
    assert len(snap.counters) == 64 and len(h.actor._sources) == 64
    assert snap.dropped == {"sources": 100_000}
    assert growth < 16 * 1024, growth


@pytest.mark.trio
async def test_distinct_keys_beyond_the_cap_are_counted_not_stored() -> None:
    config = StatsConfig(max_keys=1_000, max_latency_keys=10)
    keys = {f"k{i}": i for i in range(100_000)}
    async with running(config) as h:
        h.report("big", counters=keys)
        growth = traced_growth(lambda: h.report("big", counters=keys))
        h.report("other", counters={"a": 1}, gauges={"g": 1.0})
        h.report("lat", latencies={f"l{i}": [0.1] for i in range(100)})
        snap = await h.stats()
    assert len(snap.counters) == len(snap.rates) == 1_000
    assert "other.a" not in snap.counters and "other.g" not in snap.gauges
    assert len(snap.latencies) == 10
    assert snap.dropped == {"keys": 2 * 99_000 + 2, "latency_keys": 90}
    assert growth < 64 * 1024, growth  # replaced in place: the second report costs nothing


@pytest.mark.trio
async def test_oversized_sample_lists_are_cut_and_counted() -> None:
    async with running(StatsConfig(max_samples_per_report=100)) as h:
        h.report("a", latencies={"x": [0.5] * 1_000})
        snap = await h.stats()
    assert snap.latencies["a.x"].count == 100
    assert snap.dropped == {"latency_samples": 900}


# ----------------------------------------------------------------------- TTL


@pytest.mark.trio
async def test_sources_that_stop_reporting_expire_and_free_their_budget(
    autojump_clock: Any,
) -> None:
    config = StatsConfig(source_ttl=30.0, max_sources=2, max_keys=3, max_latency_keys=1)
    async with running(config) as h:
        await h.tell(report("dies", {"a": 1, "b": 2}, latencies={"l": [0.1]}))
        await h.tell(report("lives", {"c": 3}))
        await h.tell(MailboxesSampled([box("bars", dropped=1)]))
        await h.tell(report("third", {"d": 4}))  # no room yet
        for _ in range(4):
            await anyio.sleep(10.0)
            await h.tell(report("lives", {"c": 3}), Tick(now=0.0))
        snap = await h.stats()
        assert snap.counters == {"lives.c": 3} and snap.latencies == {}
        assert snap.mailboxes == {}
        assert snap.dropped == {"sources": 1, "expired": 2}  # "dies" and the mailboxes
        await h.tell(report("third", {"d": 4, "e": 5}, latencies={"m": [0.2]}))
        snap = await h.stats()
    assert snap.counters == {"lives.c": 3, "third.d": 4, "third.e": 5}
    assert list(snap.latencies) == ["third.m"]


# ------------------------------------------------------------------ mailboxes


def box(name: str, depth: int = 0, capacity: int = 1024, dropped: int = 0) -> MailboxStatistics:
    return MailboxStatistics(name, OverflowPolicy.BLOCK, capacity, depth, depth, dropped, False)


@pytest.mark.trio
async def test_a_mailbox_sample_is_kept_as_it_came_bounded_and_checked() -> None:
    async with running(StatsConfig(max_mailboxes=2)) as h:
        bars, market = box("bars", 12, 1024, 4), box("connection.market")
        odd: list[Any] = [bars, "not statistics", box(""), market, box("third", dropped=1)]
        await h.tell(MailboxesSampled(odd))
        snap = await h.stats()
    assert snap.mailboxes == {"bars": bars, "connection.market": market}
    assert snap.counters == {}
    assert snap.dropped == {"mailboxes": 1, "invalid": 2}


# ---------------------------------------------------------------- supervision


@pytest.mark.trio
async def test_supervision_events_are_counted_and_breaker_state_tracked() -> None:
    sup, child = "node", "connection.market"
    async with running() as h:
        await h.tell(
            ChildStarted(supervisor=sup, child=child, incarnation=1),
            ChildHealthy(supervisor=sup, child=child),
            ChildExited(supervisor=sup, child=child, reason="failed", error="boom"),
            ChildRestarting(supervisor=sup, child=child, attempt=1, delay=0.5),
            BreakerTransitioned(supervisor=sup, child=child, old="closed", new="open", cooldown=30),
            BreakerTransitioned(supervisor=sup, child=child, old="open", new="half_open"),
            ChildStarted(supervisor=sup, child=child, incarnation=2),
        )
        mid = (await h.stats()).children[f"{sup}/{child}"]
        await h.tell(
            ChildHealthy(supervisor=sup, child=child),
            BreakerTransitioned(supervisor=sup, child=child, old="half_open", new="closed"),
            ChildExited(supervisor=sup, child="auth", reason="normal"),
            SupervisorEscalated(supervisor=sup, reason="intensity"),
            SupervisorEscalated(supervisor=sup, reason="intensity"),
            ChildExited(supervisor=sup, child="auth", reason="exploded"),  # type: ignore[arg-type]
            BreakerTransitioned(supervisor=sup, child=child, old="open", new="ajar"),  # type: ignore[arg-type]
            ChildStarted(supervisor=None, child=child, incarnation=1),  # type: ignore[arg-type]
            SupervisorEscalated(supervisor=3, reason="x"),  # type: ignore[arg-type]
        )
        snap = await h.stats()
    assert mid == ChildStats(
        sup,
        child,
        starts=2,
        exits=1,
        failures=1,
        restarts=1,
        running=True,
        healthy=False,
        breaker="half_open",
        breaker_opens=1,
    )
    assert snap.children == {
        f"{sup}/{child}": msgspec.structs.replace(mid, healthy=True, breaker="closed"),
        f"{sup}/auth": ChildStats(sup, "auth", exits=1),
    }
    assert snap.escalations == {sup: 2}
    assert snap.dropped == {"invalid": 4}


@pytest.mark.trio
async def test_children_beyond_the_cap_are_counted() -> None:
    async with running(StatsConfig(max_children=3)) as h:
        for i in range(10):
            await h.tell(ChildStarted(supervisor="s", child=f"c{i}", incarnation=1))
            await h.tell(SupervisorEscalated(supervisor=f"s{i}", reason="x"))
        snap = await h.stats()
    assert len(snap.children) == 3 and len(snap.escalations) == 3
    assert snap.dropped == {"children": 14}


# ------------------------------------------------------------- psutil, ticks


@pytest.mark.trio
@pytest.mark.parametrize(
    "error",
    [psutil.AccessDenied(), OSError(errno.EMFILE, "Too many open files")],
    ids=["psutil", "out-of-fds"],  # a flood of /metrics clients once restarted stats to death
)
async def test_process_is_sampled_once_per_tick_and_errors_are_counted(error: Exception) -> None:
    process = FakeProcess()
    process.error = error
    async with running(process=process) as h:
        await h.tell(*[Tick(now=float(i)) for i in range(5)])
        await h.stats()
        await h.stats()
        assert process.samples == 1 + 5  # the priming sample at start, then one per tick
        process.fail, process.rss = True, 1
        await h.tell(Tick(now=6.0))
        snap = await h.stats()
    assert snap.rss_bytes == 50_000_000  # the last good sample stays
    assert snap.dropped == {"psutil": 1}


# --------------------------------------------------------------- Prometheus

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


def parse_exposition(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A strict reader of text format 0.0.4; returns {(name, labels): value}."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    finished: set[str] = set()
    current = ""
    series: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(_NAME, name) and name not in helps, line
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helps and name not in types, line
            assert kind in {"counter", "gauge", "summary", "histogram", "untyped"}, line
            types[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, line
            name, labels_text, value = m.groups()
            family = name
            if family not in types:
                family = re.sub(r"_(sum|count)$", "", name)
                assert types.get(family) == "summary", f"sample before its TYPE: {line}"
            if family != current:
                assert family not in finished, f"family {family} not contiguous"
                finished.add(current)
                current = family
            labels: list[tuple[str, str]] = []
            pos, labels_text = 0, labels_text or ""
            while pos < len(labels_text):
                lm = _LABEL.match(labels_text, pos)
                assert lm, line
                raw = re.sub(r"\\(.)", lambda e: _UNESCAPE[e.group(1)], lm.group(2))
                labels.append((lm.group(1), raw))
                pos = lm.end()
            assert len({k for k, _ in labels}) == len(labels), line
            key = (name, tuple(sorted(labels)))
            assert key not in series, f"duplicate series {line}"
            series[key] = float(value)  # accepts NaN, +Inf, -Inf
    return series


def sample_snapshot(**kw: Any) -> StatsSnapshot:
    fields: dict[str, Any] = dict(
        taken_at=WALL_EPOCH,
        uptime_s=12.5,
        rss_bytes=40_000_000,
        cpu_percent=3.25,
        counters={},
        gauges={},
        rates={},
        latencies={},
        mailboxes={},
        children={},
        escalations={},
        dropped={},
    )
    return StatsSnapshot(**(fields | kw))


@pytest.mark.trio
async def test_prometheus_text_from_a_live_actor_parses() -> None:
    async with running() as h:
        await h.tell(
            report("validation", {"trades_accepted": 10, "rejected.spike": 2}, gauges={"lag": 0.5}),
            report("bars", latencies={"trade_to_bar": [0.001, 0.002, 0.003]}),
            MailboxesSampled([box("bars", depth=1, dropped=3)]),
            ChildStarted(supervisor="node", child="auth", incarnation=1),
            SupervisorEscalated(supervisor="node", reason="x"),
            "junk",
        )
        series = parse_exposition(render_prometheus(await h.stats()))
    assert series[("pxnode_validation_trades_accepted_total", ())] == 10
    assert series[("pxnode_validation_rejected_spike_total", ())] == 2
    assert series[("pxnode_validation_trades_accepted_per_second", ())] == 0
    assert series[("pxnode_validation_lag", ())] == 0.5
    p50 = series[("pxnode_bars_trade_to_bar_seconds", (("quantile", "0.5"),))]
    assert p50 == pytest.approx(0.002, rel=0.01)
    assert series[("pxnode_bars_trade_to_bar_seconds_count", ())] == 3
    assert series[("pxnode_bars_trade_to_bar_seconds_max", ())] == 0.003
    assert series[("pxnode_mailbox_dropped_total", (("mailbox", "bars"),))] == 3
    who = (("child", "auth"), ("supervisor", "node"))
    assert series[("pxnode_child_starts_total", who)] == 1
    assert series[("pxnode_child_breaker_state", (*who[:1], ("state", "closed"), who[1]))] == 1
    assert series[("pxnode_supervisor_escalations_total", (("supervisor", "node"),))] == 1
    assert series[("pxnode_stats_dropped_total", (("reason", "unknown"),))] == 1
    assert series[("pxnode_process_resident_memory_bytes", ())] == 50_000_000
    assert series[("pxnode_stats_exposition_skipped", ())] == 0


def test_prometheus_escapes_label_values() -> None:
    nasty = 'a"b\\c\nd}e,f="g'
    snap = sample_snapshot(
        mailboxes={nasty: box(nasty, depth=1, capacity=2, dropped=3)},
        children={"x": ChildStats(supervisor=nasty, child="\\")},
        counters={"s.a.b": 1, "s.a_b": 2},  # sanitize to one family: told apart by "key"
    )
    text = render_prometheus(snap)
    series = parse_exposition(text)
    assert series[("pxnode_mailbox_depth", (("mailbox", nasty),))] == 1
    assert series[("pxnode_child_running", (("child", "\\"), ("supervisor", nasty)))] == 0
    assert series[("pxnode_s_a_b_total", (("key", "s.a.b"),))] == 1
    assert series[("pxnode_s_a_b_total", (("key", "s.a_b"),))] == 2
    assert '{mailbox="a\\"b\\\\c\\nd}e,f=\\"g"}' in text


def test_prometheus_names_are_sanitized_and_clashes_skipped() -> None:
    snap = sample_snapshot(
        counters={"9lives.ünï-cödé:x y": 1, "s.x_total": 4},
        gauges={"mailbox.depth": 9.0, "lat.x_seconds_count": 1.0},  # clash: fixed, summary
        latencies={"lat.x": LatencySummary(3, 0.3, 0, 0.0, 0.0, 0.0)},
        rates={"s.r": math.inf},
    )
    series = parse_exposition(render_prometheus(snap))
    assert series[("pxnode_9lives__n__c_d__x_y_total", ())] == 1
    assert series[("pxnode_s_x_total", ())] == 4  # no _total_total
    assert series[("pxnode_s_r_per_second", ())] == math.inf
    assert series[("pxnode_lat_x_seconds_count", ())] == 1.0  # the gauge came first
    assert ("pxnode_lat_x_seconds_sum", ()) not in series
    assert math.isnan(series[("pxnode_lat_x_seconds_max", ())])  # empty window: no data
    assert series[("pxnode_stats_exposition_skipped", ())] == 2
    assert metric_name("a.b-c:d", "_total") == "pxnode_a_b_c_d_total"


def test_prometheus_of_an_empty_snapshot_is_valid() -> None:
    series = parse_exposition(render_prometheus(sample_snapshot()))
    assert series[("pxnode_uptime_seconds", ())] == 12.5
    assert series[("pxnode_process_cpu_percent", ())] == 3.25


# ------------------------------------------------------------ config, limits


def test_dynamic_limits_fit_the_memory_budget() -> None:
    gib = 2**30
    ring = dynamic_limits(gib, 10, 4, cap_ring=1_000_000)
    assert ring == int(gib * 0.25) // (40 * BAR_BYTES)
    assert ring * 40 * BAR_BYTES <= gib * 0.25
    assert dynamic_limits(gib, 10, 4, cap_ring=5_000) == 5_000
    assert dynamic_limits(0, 10, 4, cap_ring=5_000) == 2  # floor: a ring must still work
    assert dynamic_limits(10 * gib, 1, 1, cap_ring=10, budget_fraction=1.0) == 10


@pytest.mark.parametrize(
    ("args", "kw"),
    [
        ((-1, 10, 4), {}),
        ((2**30, 0, 4), {}),
        ((2**30, 10, -4), {}),
        ((2**30, 10, 4.0), {}),
        ((1.5, 10, 4), {}),
        ((2**30, 10, 4), {"cap_ring": 1}),
        ((2**30, 10, 4), {"bytes_per_bar": 0}),
        ((2**30, 10, 4), {"budget_fraction": math.nan}),
        ((2**30, 10, 4), {"budget_fraction": 1.5}),
    ],
)
def test_dynamic_limits_reject_bad_input(args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        dynamic_limits(*args, **({"cap_ring": 1_000} | kw))


@pytest.mark.parametrize(
    "kw",
    [
        {"rate_window": 0.0},
        {"rate_window": math.nan},
        {"rate_bucket": -1.0},
        {"rate_window": 10.0, "rate_bucket": 3.0},
        {"rate_window": 1.0, "rate_bucket": 2.0},
        {"latency_error": 1.0},
        {"latency_min": 0.0},
        {"latency_min": 10.0, "latency_max": 1.0},
        {"latency_max": math.inf},
        {"rate_window": 3_601.0},
        {"latency_error": 1e-5},
        {"source_ttl": "60"},
        {"max_keys": 0},
        {"max_sources": 1.5},
        {"max_children": True},
    ],
)
def test_stats_config_rejects_bad_values(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        StatsConfig(**kw)
