"""The dashboard: a pure render that fits the terminal, and the loops against a real node."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
import msgspec
import pytest
from rich.console import Console

from protocols.errors import ConfigError
from protocols.health import ContractHealth, HealthComponents, HealthReport, HubHealth
from protocols.hubs import Disconnected, HeartbeatMeasured
from protocols.interfaces import Inbox
from protocols.mailboxes import MailboxStatistics
from protocols.messages import (
    Bar,
    BreakerTransitioned,
    ChildExited,
    ChildRestarting,
    Flush,
    GetStats,
    HubMessageReceived,
    QuoteAccepted,
    QuotesAccepted,
    Request,
    Tick,
)
from protocols.stats import StatsSnapshot
from pxnode.dashboard import collect_view, describe_event, run_dashboard, run_json
from pxnode.dashboard_render import (
    DashboardView,
    QuoteView,
    SeriesView,
    render,
    sparkline,
    summary_line,
)
from pxnode.snapshot import AccountView, ContractView, NodeSnapshot, OrderView, PositionView
from supervisors.config import NodeConfig
from supervisors.mailbox import MailboxSpec, OverflowPolicy
from supervisors.node import Node, open_node

MNQ = "CON.F.US.MNQ.Z25"
CONTRACTS = [MNQ, "CON.F.US.EP.Z25", "CON.F.US.ENQ.Z25", "CON.F.US.MES.Z25", "CON.F.US.GCE.Z25"]
TIMEFRAMES = ("1min", "5min", "1hr", "4hr")
START = 1_767_000_000_000_000


# ----------------------------------------------------------------- sparkline


def test_sparkline_scales_between_min_and_max() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([5.0, 1.0], 8) == "█▁"


def test_sparkline_flat_series_sits_mid_height() -> None:
    assert sparkline([21034.25] * 5, 10) == "▄▄▄▄▄"


def test_sparkline_keeps_the_last_width_values() -> None:
    assert sparkline(range(100), 12) == sparkline(range(88, 100), 12)
    assert len(sparkline(range(100), 12)) == 12
    assert sparkline([1.0, 2.0], 0) == "" and sparkline([1.0], -3) == "" and sparkline([], 5) == ""


@pytest.mark.parametrize(
    "values",
    [[math.nan, 1.0, 2.0], [math.inf, -math.inf, 3.0], [math.nan, math.nan], [-1e308, 1e308, 0.0]],
)
def test_sparkline_survives_non_finite_and_huge_values(values: list[float]) -> None:
    line = sparkline(values, 10)
    assert len(line) == len(values) and set(line) <= set("▁▂▃▄▅▆▇█ ")
    assert [c == " " for c in line] == [not math.isfinite(v) for v in values]


# -------------------------------------------------------------------- render


def hub(breaker: str, connected: bool, reconnects: int) -> HubHealth:
    return HubHealth(
        healthy=breaker == "closed" and connected,
        connected=connected,
        breaker=breaker,  # type: ignore[arg-type]
        child_healthy=connected,
        stale=False,
        connection_id=None,
        connects=reconnects + 1,
        reconnects=reconnects,
        reconnect_requests=0,
        last_event_age=0.5,
        rtt_p50=0.01,
        rtt_max=0.02,
        rtt_samples=3,
    )


def mailbox(name: str, depth: int, capacity: int, dropped: int) -> MailboxStatistics:
    return MailboxStatistics(name, OverflowPolicy.BLOCK, capacity, depth, depth, dropped, False)


def synthetic_view(contracts: list[str], events: int = 6) -> DashboardView:
    prices = {c: 21034.25 - 1000 * k for k, c in enumerate(contracts)}
    snapshot = NodeSnapshot(
        ts="2026-01-05T15:04:05.123456+00:00",
        uptime_s=3723.4,
        trades_accepted=123_456,
        trades_rejected={"price": 3, "volume": 0, "spike": 7, "stale": 0, "malformed": 1},
        bars_closed=321,
        reconnects={"market": 3, "user": 0},
        breaker={"market": "open", "user": "closed"},
        health_score=0.42,
        healthy=False,
        rss_bytes=round(48.2 * 2**20),
        mailbox_drops=17,
        trades_per_s=56.7,
        contracts={c: ContractView(prices[c], 1000 + k) for k, c in enumerate(contracts)},
    )
    health = HealthReport(
        taken_at=1767625445.0,
        healthy=False,
        score=0.42,
        components=HealthComponents(0.5, 0.5, 0.5, 1.0, 1.0),
        hubs={"market": hub("open", False, 3), "user": hub("half_open", True, 0)},
        contracts={c: ContractHealth(0.2, True) for c in contracts},
        feed_age=0.2,
        reasons=["market hub disconnected", "market breaker open"],
        counters={},
    )
    series = {
        c: {
            tf: SeriesView(
                closes=tuple(prices[c] + 0.25 * (i % 7) for i in range(20)),
                forming=Bar(c, tf, START, p, p + 2, p - 1.5, p + 1, volume=42, trades=9),
            )
            for tf in TIMEFRAMES
        }
        for c, p in prices.items()
    }
    return DashboardView(
        snapshot=snapshot,
        health=health,
        contracts=tuple(contracts),
        timeframes=TIMEFRAMES,
        quotes={c: QuoteView(bid=p - 0.25, ask=p + 0.25, last=p) for c, p in prices.items()},
        series=series,
        mailboxes=(
            mailbox("dashboard.quotes", 1024, 1024, 17),
            mailbox("bars", 12, 4096, 0),
            mailbox("validation", 3, 4096, 0),
            mailbox("stats", 0, 1024, 0),
            mailbox("health", 0, 1024, 0),
        ),
        events=tuple(
            f"15:04:0{k} market breaker closed → open (cool-down 30s)" for k in range(events)
        ),
    )  # fmt: skip


def screen(view: DashboardView, width: int, height: int = 24) -> list[str]:
    console = Console(
        width=width, height=height, file=io.StringIO(), color_system=None, record=True
    )
    console.print(render(view, width, height))
    return console.export_text().splitlines()


@pytest.mark.parametrize("n", [2, 3, 5])
def test_render_fits_80x24_and_shows_the_key_facts(n: int) -> None:
    lines = screen(synthetic_view(CONTRACTS[:n]), 80)
    text = "\n".join(lines)
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    for contract in CONTRACTS[:n]:
        assert contract in text
    assert "21034.25" in text and "21034.00" in text and "21034.50" in text  # last, bid, ask
    assert "market down · breaker open · 3 reconn │ user up · breaker half-open" in text
    assert "closed" not in text.split("──")[0]  # the header never says "closed"
    assert "rejects price 3, spike 7, malformed 1" in text
    assert "volume 0" not in text and "stale" not in text  # zero reasons are not listed
    assert "RSS 48.2 MiB" in text and "up 01:02:03" in text and "56.7 trades/s" in text
    assert "internals mailbox drops 17 · dashboard.quotes 1024/1024 dropped 17" in text
    assert "MNQZ5 CON.F.US.MNQ.Z25  last 21034.25" in text  # symbol beside id
    assert "↕1.50  O" in text  # the sparkline's price scale
    assert "O 21034.25 H 21036.25 L 21032.75 C 21035.25 V 42" in text
    assert any(set(line) & set("▁▂▃▄▅▆▇█") for line in lines)


def test_render_shows_what_fits_and_counts_the_rest() -> None:
    many = [f"CON.F.US.X{k:02d}.Z25" for k in range(30)]
    lines = screen(synthetic_view(many), 80)
    text = "\n".join(lines)
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    shown = sum(c in text for c in many)
    assert 5 <= shown < 30 and f"contracts {shown} of 30 · +{30 - shown} more" in text


def test_a_wider_and_taller_terminal_shows_more() -> None:
    view = synthetic_view(CONTRACTS)
    narrow, wide, tall = screen(view, 80), screen(view, 160), screen(view, 80, 60)
    assert max(map(len, wide)) <= 160 and len(wide) <= 24 and len(tall) <= 60

    def blocks(lines: list[str]) -> int:
        return sum(line.count(" V 42") for line in lines)

    assert blocks(narrow) < blocks(wide) == blocks(tall) == 5 * len(TIMEFRAMES)
    assert "market hub disconnected; market breaker open" in "\n".join(wide)


@pytest.mark.parametrize("width,height", [(20, 5), (40, 10), (60, 15), (300, 100)])
def test_render_never_overflows_odd_sizes(width: int, height: int) -> None:
    lines = screen(synthetic_view(CONTRACTS), width, height)
    assert len(lines) <= height and max(map(len, lines)) <= width


def test_render_keeps_huge_numbers_inside_their_columns() -> None:
    view = synthetic_view([MNQ])
    huge = msgspec.structs.replace(
        view,
        mailboxes=(mailbox("a.very.long.mailbox.name", 123_456, 1_000_000, 2**63 - 1),),
        events=("x" * 500,),
        snapshot=msgspec.structs.replace(view.snapshot, uptime_s=10**9, rss_bytes=2**34),
    )
    lines = screen(huge, 80)
    text = "\n".join(lines)
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    assert "· a.very.long.mailbox.name 123k/1000k dropped 9223P" in text
    assert "x" * 80 in lines
    assert "up 11574d01:46:40" in text and "RSS 16384.0 MiB" in text


def test_render_with_nothing_yet() -> None:
    view = synthetic_view([MNQ], events=0)
    bare = msgspec.structs.replace(
        view,
        quotes={},
        series={},
        mailboxes=(),
        snapshot=msgspec.structs.replace(
            view.snapshot,
            contracts={MNQ: ContractView(None, 0)},
            trades_rejected={"price": 0},
        ),
    )
    text = "\n".join(screen(bare, 80))
    assert "no bar forming" in text and "rejects none" in text and "no events yet" in text
    assert f"{MNQ}  last —  bid —  ask —" in text


def test_render_prints_fine_ticks_exactly() -> None:
    view = synthetic_view([MNQ])
    odd = msgspec.structs.replace(
        view,
        snapshot=msgspec.structs.replace(
            view.snapshot, contracts={MNQ: ContractView(110.03125, 1)}
        ),
        quotes={MNQ: QuoteView(bid=math.nan, ask=1e9, last=None)},
    )
    text = "\n".join(screen(odd, 80))
    assert "last 110.03125  bid —  ask 1000000000.00" in text


def test_summary_line_is_one_plain_line() -> None:
    line = summary_line(synthetic_view(CONTRACTS))
    assert "\n" not in line and "\x1b" not in line
    assert "health=0.42" in line and "market=open/3" in line and "rss=48.2 MiB" in line
    assert f"{MNQ}=21034.25" in line


def test_describe_event() -> None:
    assert describe_event(BreakerTransitioned("node", "market", "closed", "open", 30.0)) == (
        "market breaker closed → open (cool-down 30s)"
    )
    assert describe_event(ChildExited("node", "bars", "failed", "boom")) == (
        "bars exited: failed (boom)"
    )
    assert describe_event(ChildRestarting("node", "bars", 2, 0.5)) == (
        "bars restarting in 0.5s (attempt 2)"
    )
    assert describe_event(Disconnected("user", "EOF")) == "user hub disconnected: EOF"
    assert describe_event(HeartbeatMeasured("market", 0.01)) is None
    assert describe_event(Tick(1.0)) == "Tick"


# ------------------------------------------------------------- against a node


async def feed(node: Node, contract: str, prices: list[float]) -> None:
    now = node.registry.wall_time()
    stamp = datetime.fromtimestamp(now, UTC).isoformat()
    items = [
        {"symbolId": "F.US.MNQ", "price": p, "timestamp": stamp, "type": 0, "volume": 2}
        for p in prices
    ]
    trades = msgspec.Raw(msgspec.json.encode([contract, items]))
    quote = {"symbol": "F.US.MNQ", "bestBid": 99.75, "bestAsk": 100.25, "timestamp": stamp}
    quotes = msgspec.Raw(msgspec.json.encode([contract, quote]))
    validation = node.ref("validation")
    await validation.tell(HubMessageReceived("market", "GatewayTrade", trades, now))
    await validation.tell(HubMessageReceived("market", "GatewayQuote", quotes, now))
    await validation.ask(Flush(), timeout=1)


def config() -> NodeConfig:
    return NodeConfig(tick_interval=0.1, contracts=[MNQ, "CON.F.US.EP.Z25"])


@pytest.mark.trio
async def test_collect_view_from_a_real_node(autojump_clock: object) -> None:
    async with open_node(config()) as node:
        spec = MailboxSpec(1024, OverflowPolicy.DROP_OLDEST)
        with (
            node.topic("topic.quotes").subscribe("dashboard.quotes", spec) as quotes,
            node.topic("topic.events").subscribe("dashboard.events", spec) as events,
        ):
            await feed(node, MNQ, [100.0, 101.5, -1.0])
            await node.topic("topic.events").tell(
                BreakerTransitioned("node", "market", "closed", "open", 30.0)
            )
            await node.topic("topic.events").tell(HeartbeatMeasured("market", 0.01))
            await anyio.sleep(0.25)  # a tick carries validation's counters to stats
            view = await collect_view(node, quotes, ["1min", "5min"], events_inbox=events)
            again = await collect_view(node, quotes, ["1min", "5min"], previous=view)
    assert view.contracts == (MNQ, "CON.F.US.EP.Z25")
    assert view.quotes[MNQ] == QuoteView(bid=99.75, ask=100.25, last=None)
    assert again.quotes == view.quotes and again.events == view.events  # carried over
    forming = view.series[MNQ]["1min"].forming
    assert forming is not None and (forming.open, forming.high, forming.low) == (
        100.0,
        101.5,
        100.0,
    )
    assert forming.close == 101.5 and forming.volume == 4 and view.series[MNQ]["1min"].closes == ()
    assert view.series["CON.F.US.EP.Z25"]["5min"] == SeriesView((), None)
    assert view.snapshot.trades_accepted == 2 and view.snapshot.contracts[MNQ].last_price == 101.5
    # validation's "healthy" may be published just after the breaker event: either order
    assert any(e.endswith(" market breaker closed → open (cool-down 30s)") for e in view.events)
    assert not any("Heartbeat" in event for event in view.events)
    names = [m.name for m in view.mailboxes]
    assert len(names) == len(set(names)) and "dashboard.quotes" in names
    lines = screen(view, 80)
    assert len(lines) <= 24 and "101.50" in "\n".join(lines)  # fmt: skip


@pytest.mark.trio
async def test_collect_view_keeps_the_newest_value_of_each_quote_field(
    autojump_clock: object,
) -> None:
    async with open_node(config()) as node:
        spec = MailboxSpec(1024, OverflowPolicy.DROP_OLDEST)
        with node.topic("topic.quotes").subscribe("dashboard.quotes", spec) as quotes:
            now, ep = node.registry.wall_time(), "CON.F.US.EP.Z25"
            topic = node.topic("topic.quotes")
            await topic.tell(
                QuotesAccepted(
                    [
                        QuoteAccepted(MNQ, 0, now, last=100.0, bid=99.75, ask=100.25),
                        QuoteAccepted(ep, 0, now, last=5000.0),
                        QuoteAccepted(MNQ, 0, now, bid=100.0),  # partial: the rest stays
                    ]
                )
            )
            await topic.tell(QuotesAccepted([QuoteAccepted(MNQ, 0, now, last=100.5)]))
            await topic.tell(QuoteAccepted(MNQ, 0, now, last=1.0))  # not the topic's message
            view = await collect_view(node, quotes, ["1min"])
    assert view.quotes == {
        MNQ: QuoteView(bid=100.0, ask=100.25, last=100.5),
        ep: QuoteView(bid=None, ask=None, last=5000.0),
    }


def dashboard_subscribers(node: Node) -> list[str]:
    return [
        m.name
        for name in ("topic.quotes", "topic.events")
        for m in node.topic(name).statistics().subscribers
        if m.name.startswith("dashboard.")
    ]


@pytest.mark.trio
async def test_run_dashboard_without_a_terminal_prints_plain_lines(autojump_clock: object) -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, height=24)
    assert not console.is_terminal
    async with open_node(config()) as node:
        await feed(node, MNQ, [100.0])
        await run_dashboard(
            node, anyio.Event(), timeframes=["1min"], duration=0.3, console=console, refresh=0.1
        )
        assert dashboard_subscribers(node) == []
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\x1b" not in out.getvalue()  # at 0.0, 0.1, 0.2 s
    assert all(f"{MNQ}=100.00" in line and "health=" in line for line in lines)


@pytest.mark.trio
async def test_run_dashboard_on_a_terminal_draws_live(autojump_clock: object) -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, height=24, force_terminal=True, color_system="standard")
    async with open_node(config()) as node:
        await feed(node, MNQ, [100.0, 100.5])
        await run_dashboard(
            node, anyio.Event(), timeframes=TIMEFRAMES, duration=0.3, console=console, refresh=0.1
        )
        assert dashboard_subscribers(node) == []
    text = out.getvalue()
    assert "\x1b[" in text and text.count("pxnode") == 4  # three frames, then the final one
    assert MNQ in text and "100.50" in text, text


@pytest.mark.trio
async def test_the_stopping_event_ends_both_loops(autojump_clock: object) -> None:
    lines, plain = io.StringIO(), io.StringIO()
    console = Console(file=plain, width=80, height=24)
    stopping = anyio.Event()
    async with open_node(config()) as node:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(run_json, node, stopping, duration=None, out=lines))
            tg.start_soon(
                partial(
                    run_dashboard,
                    node,
                    stopping,
                    timeframes=["1min"],
                    duration=None,
                    console=console,
                )
            )
            await anyio.sleep(2.5)
            stopping.set()
            stopped_at = anyio.current_time()
        assert anyio.current_time() - stopped_at < 0.01  # not at their next refresh
    assert len(lines.getvalue().splitlines()) == 3 == len(plain.getvalue().splitlines())


@pytest.mark.trio
async def test_run_json_prints_one_snapshot_per_refresh(autojump_clock: object) -> None:
    out = io.StringIO()
    async with open_node(config()) as node:
        await feed(node, MNQ, [100.0])
        await anyio.sleep(0.25)  # let stats see validation's counters
        await run_json(node, anyio.Event(), duration=0.3, out=out, refresh=0.1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    snaps = [msgspec.json.decode(line, type=NodeSnapshot) for line in lines]
    assert snaps[-1].trades_accepted == 1 and snaps[-1].contracts[MNQ].last_price == 100.0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
@pytest.mark.trio
async def test_bad_refresh_or_duration_is_a_config_error(bad: float) -> None:
    async with open_node(config()) as node:
        with pytest.raises(ConfigError, match="refresh"):
            await run_json(node, anyio.Event(), duration=1.0, out=io.StringIO(), refresh=bad)
        with pytest.raises(ConfigError, match="refresh"):
            await run_dashboard(node, anyio.Event(), timeframes=["1min"], duration=1.0, refresh=bad)
        if not bad >= 0:
            with pytest.raises(ConfigError, match="duration"):
                await run_json(node, anyio.Event(), duration=bad, out=io.StringIO())
        assert dashboard_subscribers(node) == []


class AnswersOnce:
    """A stats actor that answers the first GetStats and then goes quiet (busy, restarting)."""

    async def run(self, inbox: Inbox[Any], ctx: object) -> None:
        answered = False
        async for msg in inbox:
            if isinstance(msg, Request) and isinstance(msg.body, GetStats) and not answered:
                answered = True
                msg.reply.tell_nowait(StatsSnapshot(0, 1, 2**20, 0, {}, {}, {}, {}, {}, {}, {}, {}))


@pytest.mark.trio
async def test_a_silent_actor_makes_the_frame_stale_not_the_dashboard_crash(
    autojump_clock: object,
) -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, height=24)
    async with open_node(config(), overrides={"stats": AnswersOnce()}) as node:
        await run_dashboard(
            node, anyio.Event(), timeframes=["1min"], duration=12, console=console, refresh=1.0
        )
    lines = out.getvalue().splitlines()
    assert "STALE" not in lines[0]
    assert len(lines) >= 2 and all("STALE: no reply from 'stats'" in line for line in lines[1:])


def test_a_stale_frame_is_marked() -> None:
    view = msgspec.structs.replace(synthetic_view([MNQ]), stale="no reply from 'stats'")
    first = screen(view, 80)[0]
    assert first.startswith("pxnode STALE ● degraded") and len(first) <= 80


@pytest.mark.anyio
async def test_both_loops_run_on_every_backend() -> None:
    """Real (short) time: asyncio has no virtual clock."""
    lines, plain = io.StringIO(), io.StringIO()
    async with open_node(config()) as node:
        await feed(node, MNQ, [100.0])
        await run_json(node, anyio.Event(), duration=0.05, out=lines, refresh=0.02)
        await run_dashboard(
            node,
            anyio.Event(),
            timeframes=["1min"],
            duration=0.05,
            console=Console(file=plain, width=80),
            refresh=0.02,
        )
        assert dashboard_subscribers(node) == []
    assert msgspec.json.decode(lines.getvalue().splitlines()[0], type=NodeSnapshot).contracts
    assert f"{MNQ}=100.00" in plain.getvalue()


def test_contracts_come_before_internals_at_80x24() -> None:
    lines = screen(synthetic_view(CONTRACTS[:4], events=1), 80)
    assert len(lines) <= 24
    assert sum(line.count(" V 42") for line in lines) == 3 * len(TIMEFRAMES)
    assert sum(line.startswith("internals") for line in lines) == 1


def test_an_event_is_shown_whole_not_cut() -> None:
    cause = "connection_market exited: failed (OSError: [Errno 111] Connect call failed " + (
        "('127.0.0.1', 8443) after 3 attempts through the corporate proxy at 10.0.0.1:3128)"
    )
    view = msgspec.structs.replace(synthetic_view(CONTRACTS[:3]), events=(f"15:04:05 {cause}",))
    lines = screen(view, 80)
    tail = lines[next(k for k, line in enumerate(lines) if line.startswith("15:04:05")) :]
    assert " ".join(line.strip() for line in tail) == f"15:04:05 {cause}"


def test_the_account_line_shows_balance_position_pnl_and_orders() -> None:
    view = synthetic_view(CONTRACTS[:3])
    position = PositionView(7001, MNQ, "MNQZ5", "long", 2, 20980.0, 21034.25, 54.25, 108.5)
    order = OrderView(9002, 7001, MNQ, "MNQZ5", "open", "limit", "ask", 2, 21080.0, None, 0)
    snapshot = msgspec.structs.replace(
        view.snapshot,
        accounts=[AccountView(7001, "PRAC-DEMO-7001", 50_108.5, True, 108.5)],
        positions=[position],
        orders=[order],
    )
    lines = screen(msgspec.structs.replace(view, snapshot=snapshot), 80)
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    assert (
        "PRAC-DEMO-7001 balance 50,108.50 · MNQZ5 long 2 @ 20980.00 P&L +108.50 · 1 order"
        in "\n".join(lines)
    )
    assert "balance[PRAC-DEMO-7001]=50108.50 pnl[PRAC-DEMO-7001]=+108.50" in summary_line(
        msgspec.structs.replace(view, snapshot=snapshot)
    )
