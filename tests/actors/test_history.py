"""History actor: the cut, source requests, derived bars, gaps, retries, failures counted."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import msgspec
import pytest
import trio

from actors.bars import BarsActor
from actors.history import COUNTERS, HistoryActor, HistoryConfig
from protocols.errors import AskTimeout, ConfigError
from protocols.hubs import Connected, Disconnected, SubscribeContract
from protocols.messages import (
    AuthFailureReported,
    BackfillBars,
    BackfillStarted,
    BackfillState,
    Bar,
    ChildStarted,
    CountersReported,
    CutPassed,
    GetBackfill,
    RefreshToken,
    Request,
    Stop,
    TrackTimeframes,
)
from protocols.rest import RateLimit, RestBudget, RestLimits
from protocols.timeframes import BarClock, parse_timeframe
from pxnode.sim import GatewaySim, SimConfig, mock_transport
from pxnode.testing import EPOCH, FakeAuth, FakeContext, RecordingRef
from supervisors.mailbox import Mailbox, MailboxSpec

START = 1_764_000_000.0  # 2025-11-24T16:00:00Z, a Monday; virtual time 0
MNQ = "CON.F.US.MNQ.Z25"
MES = "CON.F.US.MES.Z25"
TOKEN = "tok-SECRET-1"
CUT = int((START + 6) * 1e6)  # the cut of a hub up at START: 6 s ahead, a whole second


def wall() -> float:
    return START + anyio.current_time()


# -------------------------------------------------------------------- doubles


def FakeCtx(auth: FakeAuth) -> FakeContext:
    """History's context: auth answers, bars and stats recorded."""
    return FakeContext("history", [auth, RecordingRef("bars"), RecordingRef("stats")], wall=wall)


# ------------------------------------------------------------ a scripted gateway


Answer = Callable[[httpx.Request], Awaitable[httpx.Response]]


@dataclass
class Call:
    at: float  # virtual seconds since the start
    body: dict[str, Any]
    authorization: str | None


@dataclass
class Gateway:
    """Answers each retrieveBars call from ``script`` (in order), then with ``default``."""

    default: Answer = field(default_factory=lambda: answer())
    script: list[Answer] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/History/retrieveBars"
        body = json.loads(request.content)
        self.calls.append(Call(anyio.current_time(), body, request.headers.get("authorization")))
        step = self.script.pop(0) if self.script else self.default
        return await step(request)

    def field(self, name: str) -> list[Any]:
        return [c.body[name] for c in self.calls]


def answer(*bars: Any, **envelope: Any) -> Answer:
    body = msgspec.json.encode(
        {"bars": list(bars), "success": True, "errorCode": 0, "errorMessage": None, **envelope}
    )
    return reply(200, body)


def reply(status: int, content: bytes = b"", headers: dict[str, str] | None = None) -> Answer:
    async def step(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers)

    return step


def raising(exc: Exception) -> Answer:
    async def step(_: httpx.Request) -> httpx.Response:
        raise exc

    return step


def slow(seconds: float, then: Answer) -> Answer:
    async def step(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(seconds)
        return await then(request)

    return step


def only_for(token: str, then: Answer) -> Answer:
    """401 unless the bearer is ``token``, as a gateway does after a token expired."""

    async def step(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {token}":
            return httpx.Response(401, headers={"www-authenticate": "Bearer"})
        return await then(request)

    return step


def hbar(t: str, o: float, h: float, low: float, c: float, v: int) -> dict[str, Any]:
    return {"t": t, "o": o, "h": h, "l": low, "c": c, "v": v}


# ---------------------------------------------------------------------- harness


def config(**overrides: Any) -> HistoryConfig:
    settings: dict[str, Any] = {
        "api_url": "https://gateway.test",
        "contracts": [MNQ],
        "timeframes": ["1min"],
        "backoff_jitter": 0.0,
        "max_clock_lag": 0.0,  # no bars here to tell CutPassed: the node's clock decides
    }
    settings.update(overrides)
    return HistoryConfig(**settings)


@dataclass
class Running:
    actor: HistoryActor
    ctx: FakeContext
    mailbox: Mailbox[Any]

    def send(self, *msgs: Any) -> None:
        for msg in msgs:
            self.mailbox.send_nowait(msg)

    @property
    def auth(self) -> FakeAuth:
        auth = self.ctx.refs["auth"]
        assert isinstance(auth, FakeAuth)
        return auth

    @property
    def backfills(self) -> list[BackfillBars]:
        return [m for m in self.ctx.refs["bars"].told if isinstance(m, BackfillBars)]

    @property
    def started(self) -> list[BackfillStarted]:
        return [m for m in self.ctx.refs["bars"].told if isinstance(m, BackfillStarted)]

    async def state(self) -> BackfillState:
        reply = RecordingRef("reply")
        self.send(Request(GetBackfill(), reply))
        await reply.wait_for(1)
        (state,) = reply.told
        assert isinstance(state, BackfillState)
        return state

    @property
    def counters(self) -> dict[str, int]:
        reports = self.ctx.refs["stats"].told
        assert all(isinstance(r, CountersReported) and r.source == "history" for r in reports)
        return dict(self.actor.counters)

    async def series_done(self, n: int) -> None:
        """Wait until ``n`` requests ended (one report each) and what they made was told."""
        await self.ctx.refs["stats"].wait_for(n)
        await anyio.sleep(0.5)


@contextmanager
def inbox() -> Iterator[Mailbox[Any]]:
    mailbox: Mailbox[Any] = Mailbox("history", MailboxSpec(64))
    try:
        yield mailbox
    finally:
        mailbox.dispose()


@asynccontextmanager
async def running(
    transport: httpx.AsyncBaseTransport, auth: FakeAuth | None = None, **overrides: Any
) -> AsyncIterator[Running]:
    connect = overrides.pop("connect", True)
    budget = overrides.pop("budget", None)
    actor = HistoryActor(config(**overrides), transport=transport, budget=budget)
    ctx = FakeCtx(auth or FakeAuth())
    with inbox() as mailbox, anyio.fail_after(24 * 3600):  # a hang fails in virtual time
        if connect:  # the market hub is up at once: the cut is 6 s ahead, requests at 8 s
            mailbox.send_nowait(Connected("market"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(actor.run, mailbox, ctx)
            yield Running(actor, ctx, mailbox)
            mailbox.send_nowait(Stop())


def zeroed(**counts: int) -> dict[str, int]:
    return {**dict.fromkeys(COUNTERS, 0), **counts}


# ------------------------------------------------------------------ start-up


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


@pytest.mark.trio
async def test_start_up_asks_each_source_once_per_contract_shortest_first(
    autojump_clock: Any,
) -> None:
    """1sec/1min/1hr bars of the gateway tile every frame; its 4hr and 1day are never asked."""
    gateway = Gateway()
    frames = ["1sec", "5min", "4hr", "1day"]
    async with running(
        gateway.transport(), timeframes=frames, contracts=[MNQ, MES], connect=False
    ) as node:
        assert (await node.state()).pending == [f"{c} {f}" for c in (MNQ, MES) for f in frames]
        await trio.sleep(30)
        assert gateway.calls == []  # nothing before the market hub is up: no cut yet
        node.send(Connected("market"))
        await node.series_done(6)
        assert await node.state() == BackfillState(pending=[], failed={})
        assert node.ctx.healthy == 1
    cut = START + 36
    assert node.started == [BackfillStarted(c, frames, int(cut * 1e6)) for c in (MNQ, MES)]
    assert [c.at for c in gateway.calls] == [38.0] * 6  # 2 s after the cut
    assert gateway.field("contractId") == [MNQ, MES] * 3
    assert gateway.field("unit") == [1, 1, 2, 2, 3, 3]
    assert set(gateway.field("unitNumber")) == {1}
    assert set(gateway.field("includePartialBar")) == {False}
    assert set(gateway.field("live")) == {False}
    assert gateway.field("endTime")[::2] == [iso(cut), iso(START), iso(START)]
    # 200 bars back (x1.5 for closed days), never less than min_lookback (4 days); the
    # 1hr source reaches back as far as the longest frame needs
    assert gateway.field("startTime")[::2] == [
        "2025-11-20T15:55:00+00:00",
        "2025-11-19T15:00:00+00:00",
        "2025-01-11T23:00:00+00:00",  # a 1day bar starts 17:00 Chicago
    ]
    assert gateway.field("limit")[::2] == [20_000, 7260, 7601]
    assert {c.authorization for c in gateway.calls} == {f"Bearer {TOKEN}"}
    assert [(b.contract, b.timeframe, b.bars) for b in node.backfills] == [
        (MNQ, "1sec", []),
        (MES, "1sec", []),
        (MNQ, "5min", []),
        (MES, "5min", []),
        (MNQ, "4hr", []),
        (MNQ, "1day", []),
        (MES, "4hr", []),
        (MES, "1day", []),
    ]
    assert node.counters == zeroed(requests=6, backfills=8, cuts=1, gaps=1)


@pytest.mark.trio
async def test_bars_are_made_from_minutes_and_seconds_up_to_the_cut(autojump_clock: Any) -> None:
    gateway = Gateway(
        script=[
            answer(  # seconds of the minute the cut is in, newest first
                hbar("2025-11-24T16:00:03+00:00", 25012.0, 25013.0, 25011.0, 25012.5, 2),
                hbar("2025-11-24T16:00:01+00:00", 25011.0, 25011.5, 25010.0, 25011.5, 1),
            ),
            answer(
                hbar("2025-11-24T15:59:00+00:00", 25010.25, 25012.5, 25009.0, 25011.75, 42),
                hbar("2025-11-24T09:58:00-06:00", 25000.0, 25010.5, 24999.25, 25010.25, 7),
                hbar("2025-11-24T15:57:00Z", 24990.5, 25001.0, 24990.5, 25000.0, 1),
                hbar("2025-11-24T15:56:00", 24991.0, 24991.0, 24991.0, 24991.0, 0),
            ),
        ]
    )
    async with running(gateway.transport(), initial_bars=4) as node:
        await node.series_done(2)
    since = int((START - 345_960) * 1e6)  # 4 bars x 1.5 + 4 days back
    assert gateway.field("limit") == [6, 5766]
    minute = 60_000_000
    assert node.backfills == [
        BackfillBars(
            MNQ,
            "1min",
            [
                history(1_763_999_760_000_000, 24991.0, 24991.0, 24991.0, 24991.0, 0),
                history(1_763_999_820_000_000, 24990.5, 25001.0, 24990.5, 25000.0, 1),
                history(1_763_999_880_000_000, 25000.0, 25010.5, 24999.25, 25010.25, 7),
                history(1_763_999_940_000_000, 25010.25, 25012.5, 25009.0, 25011.75, 42),
                history(1_763_999_940_000_000 + minute, 25011.0, 25013.0, 25010.0, 25012.5, 3),
            ],
            since=since,
            cut=CUT,
        )
    ]
    assert node.counters == zeroed(requests=2, bars_received=6, backfills=1, cuts=1, gaps=1)


def history(start: int, o: float, h: float, low: float, c: float, v: int, tf: str = "1min") -> Bar:
    return Bar(MNQ, tf, start, o, h, low, c, v, 0, source="history")


def sim_gateway(contracts: tuple[str, ...] = (MNQ,)) -> GatewaySim:
    """The simulated gateway, built inside the test: its clock is the virtual one."""
    return GatewaySim(SimConfig(rate=50, token_ttl=3600, contracts=contracts), wall_time=wall)


def sim_bar_values(gateway: GatewaySim, start: float, end: float) -> tuple[Any, ...]:
    trades = gateway.sim.recent_trades(MNQ, since=start, until=end)
    prices = [t.price for t in trades]
    return prices[0], max(prices), min(prices), prices[-1], sum(t.volume for t in trades)


def values(bar: Bar) -> tuple[Any, ...]:
    return bar.open, bar.high, bar.low, bar.close, bar.volume


@pytest.mark.trio
async def test_every_frame_from_the_sim_is_its_trades_up_to_the_cut(autojump_clock: Any) -> None:
    """The sim aligns its own 4hr/1day bars on UTC like the gateway; ours come out on Chicago
    sessions because they are built from 1hr, 1min and 1sec bars, and they agree with trades."""
    gateway = sim_gateway()
    await trio.sleep(600)
    gateway.sim.advance(wall() + 10)
    auth = FakeAuth(lambda: gateway.tokens.mint("demo"))
    frames = ["1sec", "1min", "5min", "1hr", "4hr", "1day"]
    async with running(
        mock_transport(gateway.rest), auth, timeframes=frames, initial_bars=5, connect=False
    ) as node:
        node.send(Connected("market"))
        await node.series_done(3)
    cut = START + 606
    assert node.counters["failures_transient"] == node.counters["bars_rejected_unaligned"] == 0
    by_frame = {b.timeframe: b for b in node.backfills}
    assert list(by_frame) == frames and {b.cut for b in by_frame.values()} == {int(cut * 1e6)}
    minutes = by_frame["1min"].bars
    for bar in minutes:  # sim time: exactly its trades; the last minute ends at the cut
        if bar.start >= START * 1e6:
            lo = bar.start / 1e6
            assert values(bar) == sim_bar_values(gateway, lo, min(lo + 60, cut))
    assert by_frame["1sec"].bars[-1].start == int((cut - 1) * 1e6)
    for tf in ("5min", "1hr", "4hr", "1day"):
        for bar in by_frame[tf].bars:
            clock = BarClock(parse_timeframe(tf))
            parts = [m for m in minutes if clock.start_of(m.start) == bar.start]
            if not parts or (parts[0].start != bar.start and tf in ("5min", "1hr")):
                continue  # older than the 1min back-fill reaches
            if minutes[0].start > bar.start:
                continue
            assert (bar.high, bar.low, bar.close) == (
                max(p.high for p in parts),
                min(p.low for p in parts),
                parts[-1].close,
            )
            assert bar.volume == sum(p.volume for p in parts)
    day = by_frame["1day"].bars[-1]
    assert day.start_time == datetime(2025, 11, 23, 23, tzinfo=UTC)  # 17:00 Chicago
    bars = BarsActor(frames)
    for msg in node.started + node.backfills:
        if isinstance(msg, BackfillStarted):
            bars.on_backfill_started(msg)
        else:
            bars.on_backfill(msg)
    assert bars.counters["backfill_rejected"] == bars.counters["backfill_stale"] == 0


# ----------------------------------------------------------------------- gaps


@pytest.mark.trio
async def test_a_gap_is_filled_from_the_bar_before_the_disconnect_to_a_new_cut(
    autojump_clock: Any,
) -> None:
    gateway = Gateway()
    frames = ["1min", "5min", "4hr"]
    async with running(gateway.transport(), timeframes=frames, initial_bars=0) as node:
        await node.series_done(3)
        await trio.sleep(100 - anyio.current_time())
        node.send(Disconnected("market", "socket closed"))
        await trio.sleep(30)
        node.send(
            Disconnected("market", "connect failed"),  # still down: the gap keeps its start
            Connected("user"),
            Disconnected("user", "eof"),
            ChildStarted("node", "connection_market", 2),
        )
        await trio.sleep(70)
        node.send(Connected("market", "abc"))
        await node.series_done(6)
        node.send(Connected("market", "abc"))  # no disconnect before it: no gap
        await trio.sleep(600)
        assert len(gateway.calls) == 6
    gap = gateway.calls[3:]
    assert [c.at for c in gap] == [208.0] * 3
    assert [c.body["unit"] for c in gap] == [1, 2, 3]
    assert [c.body["startTime"] for c in gap] == [
        "2025-11-24T16:03:00+00:00",
        "2025-11-24T15:55:00+00:00",  # 16:01:40 is in the 16:00 5min bar; the one before
        "2025-11-24T11:00:00+00:00",  # 4hr bars start at 05:00, 09:00 Chicago
    ]
    assert [c.body["endTime"] for c in gap] == [
        "2025-11-24T16:03:26+00:00",  # the cut: 6 s after the hub came back
        "2025-11-24T16:03:00+00:00",
        "2025-11-24T16:00:00+00:00",
    ]
    assert node.counters == zeroed(requests=6, gaps=2, cuts=2, backfills=6)


@pytest.mark.trio
async def test_a_new_cut_abandons_the_round_under_way_and_keeps_the_earliest_start(
    autojump_clock: Any,
) -> None:
    gateway = Gateway(script=[slow(200, answer())])
    async with running(gateway.transport(), request_timeout=300.0, initial_bars=0) as node:
        for at, event in (
            (70, Disconnected("market", "x")),
            (80, Connected("market")),
            (130, Disconnected("market", "y")),
            (140, Connected("market")),
        ):
            await trio.sleep(at - anyio.current_time())
            node.send(event)
        await node.series_done(3)
        await trio.sleep(600)
    assert [(c.at, c.body["unit"]) for c in gateway.calls] == [(8.0, 1), (208.0, 1), (208.0, 2)]
    assert gateway.calls[2].body["startTime"] == "2025-11-24T15:59:00+00:00"  # from the start
    assert [b.cut for b in node.backfills] == [int((START + 146) * 1e6)]
    assert node.counters["gaps"] == 3 and node.counters["cuts"] == 3


@pytest.mark.trio
async def test_an_answer_cut_short_by_max_bars_back_fills_from_its_oldest_bar(
    autojump_clock: Any,
) -> None:
    bars = [
        hbar(f"2025-11-24T15:{m:02}:00+00:00", 1.0, 1.0, 1.0, 1.0, 1) for m in range(59, -1, -1)
    ]
    gateway = Gateway(script=[answer(), answer(*bars)])
    async with running(
        gateway.transport(), initial_bars=50, min_lookback=0.0, max_bars=60, timeframes=["5min"]
    ) as node:
        await node.series_done(2)
    assert gateway.field("limit") == [6, 60]
    (fill,) = node.backfills
    assert fill.since == int((START - 3600) * 1e6)
    assert len(fill.bars) == 12
    assert node.counters["truncated"] == 1


@pytest.mark.trio
@pytest.mark.parametrize(
    ("passed_at", "asked_at"),
    [
        (None, 38.0),  # a quiet market: max_clock_lag (30 s) after the cut, then settle
        (10.0, 12.0),  # the gateway's clock 4 s behind: settle after its clock passed the cut
        (3.0, 8.0),  # a clock ahead: never before settle after the cut by the node's clock
    ],
)
async def test_history_is_asked_settle_after_the_gateways_clock_passed_the_cut(
    autojump_clock: Any, passed_at: float | None, asked_at: float
) -> None:
    gateway = Gateway()
    async with running(gateway.transport(), max_clock_lag=30.0) as node:
        await trio.sleep(1)
        (started,) = node.started  # the cut: 6 s ahead of the hub coming up at 0
        node.send(CutPassed(MNQ, started.cut - 1))  # not this cut: ignored
        if passed_at is not None:
            await trio.sleep(passed_at - anyio.current_time())
            node.send(CutPassed(MNQ, started.cut))
        await node.series_done(1)
    assert gateway.calls[0].at == asked_at


@pytest.mark.trio
async def test_a_gap_noticed_late_starts_where_the_feed_went_silent(autojump_clock: Any) -> None:
    """A frozen socket is noticed a timeout after its last event (at 16:00:40 here, noticed
    at 16:01:40); Disconnected says when that was, and the gap asks from there."""
    gateway = Gateway()
    async with running(gateway.transport(), timeframes=["1sec", "1min"], initial_bars=0) as node:
        await node.series_done(2)
        await trio.sleep(100 - anyio.current_time())
        node.send(Disconnected("market", "frozen", silent_since=EPOCH + 40))
        await trio.sleep(20)
        node.send(Connected("market", "abc"))
        await node.series_done(4)
    starts = {c.body["unit"]: c.body["startTime"] for c in gateway.calls[2:]}
    assert starts == {1: "2025-11-24T16:00:39+00:00", 2: "2025-11-24T15:59:00+00:00"}


@pytest.mark.trio
async def test_a_gap_from_the_sim_after_its_token_expired(autojump_clock: Any) -> None:
    gateway = sim_gateway()
    auth = FakeAuth(lambda: gateway.tokens.mint("demo"))
    async with running(mock_transport(gateway.rest), auth, initial_bars=0, connect=False) as node:
        node.send(Disconnected("market", "drop"))
        await trio.sleep(400)
        gateway.sim.advance(wall() + 10)
        gateway.tokens.expire_all()
        gateway.rest.pending_500 = 2
        node.send(Connected("market"))
        await node.series_done(2)
    assert auth.told == [RefreshToken()]
    (fill,) = node.backfills
    cut = START + 406
    assert [b.start for b in fill.bars] == [int((START + 60 * k) * 1e6) for k in range(-1, 7)]
    for bar in fill.bars[1:]:
        lo = bar.start / 1e6
        assert values(bar) == sim_bar_values(gateway, lo, min(lo + 60, cut))
    assert node.counters["requests"] == 5  # 500, 500, 401, 200 and the minutes


# ------------------------------------------------------------- token handling


@pytest.mark.trio
async def test_a_401_refreshes_the_token_and_retries_once(autojump_clock: Any) -> None:
    bar = hbar("2025-11-24T15:00:00+00:00", 1.0, 2.0, 0.5, 1.5, 3)
    gateway = Gateway(only_for("tok-SECRET-2", answer(bar)))
    async with running(gateway.transport(), timeframes=["1hr"]) as node:
        await node.series_done(2)
    assert [c.authorization for c in gateway.calls] == [
        "Bearer tok-SECRET-1",
        "Bearer tok-SECRET-2",
        "Bearer tok-SECRET-2",
    ]
    assert node.auth.told == [RefreshToken()]
    assert node.counters == zeroed(
        requests=3, bars_received=2, bars_rejected_time=1, backfills=1, cuts=1, gaps=1
    )  # the same bar came back for the seconds too: outside their window


@pytest.mark.trio
async def test_a_401_with_the_fresh_token_too_gives_the_series_up_with_a_clear_reason(
    autojump_clock: Any,
) -> None:
    gateway = Gateway(only_for("never", answer()))
    async with running(gateway.transport(), contracts=[MNQ, MES]) as node:
        await node.series_done(4)
        state = await node.state()
    assert node.auth.told == [RefreshToken()] * 4
    assert node.counters == zeroed(requests=8, failures_unauthorized=4, backfills=2, cuts=1, gaps=1)
    assert state.retrying == {
        f"{c} 1min": "1min history: HTTP 401 with a fresh token" for c in (MNQ, MES)
    }
    assert state.failed == {}  # not final: tried again with a new cut
    # the cut is released: bars keeps its live bars
    assert [(b.bars, b.since, b.cut) for b in node.backfills] == [([], CUT, CUT)] * 2


@pytest.mark.trio
@pytest.mark.parametrize(
    "reply", [AuthFailureReported("invalid credentials"), AskTimeout("no reply"), "gibberish"]
)
async def test_no_token_from_auth_is_counted_without_a_request(
    autojump_clock: Any, reply: Any
) -> None:
    gateway = Gateway()
    auth = FakeAuth()
    auth.reply = reply
    async with running(gateway.transport(), auth) as node:
        await node.series_done(2)
    assert gateway.calls == []
    assert node.counters == zeroed(failures_auth=2, backfills=1, cuts=1, gaps=1)


# ---------------------------------------------------------------- REST errors


@pytest.mark.trio
async def test_5xx_is_retried_with_backoff_then_counted_and_the_actor_carries_on(
    autojump_clock: Any,
) -> None:
    gateway = Gateway(reply(500, b'{"success": false}'))
    async with running(gateway.transport(), contracts=[MNQ, MES]) as node:
        await node.series_done(4)
        assert [c.at for c in gateway.calls][:4] == [8.0, 9.0, 11.0, 15.0]
        assert node.counters == zeroed(
            requests=16, failures_transient=4, backfills=2, cuts=1, gaps=1
        )
        gateway.default = answer(hbar("2025-11-24T15:59:00+00:00", 1.0, 1.0, 1.0, 1.0, 1))
        node.send(Disconnected("market", "x"), Connected("market"))
        await node.series_done(8)
    assert [(b.contract, len(b.bars)) for b in node.backfills[2:]] == [(MNQ, 1), (MES, 1)]


@pytest.mark.trio
async def test_a_back_fill_given_up_on_is_tried_again_with_a_new_cut(
    autojump_clock: Any,
) -> None:
    """Seen in the chaos soak: 500s right after a reconnect lost a gap's trades for good."""
    gateway = Gateway(script=[reply(500)] * 4)  # the seconds' 4 attempts; the minutes answer
    async with running(gateway.transport()) as node:
        await node.series_done(2)
        given_up = node.backfills[0]
        assert (given_up.bars, given_up.since, given_up.cut) == ([], CUT, CUT)  # cut released
        assert (await node.state()).retrying == {
            f"{MNQ} 1min": "1sec history: gave up after 4 attempts: "
            "POST /api/History/retrieveBars: HTTP 500"
        }
        await node.series_done(4)  # 5 s later a new cut, then both sources again
        state = await node.state()
    first, again = node.started
    assert first.cut == CUT
    assert again.cut == CUT + 20_000_000  # told empty at 15 s, refill at 20 s, 6 s ahead
    refilled = node.backfills[1]
    assert refilled.cut == again.cut and refilled.since < CUT  # the whole want, not from CUT
    assert [c.at for c in gateway.calls] == [8.0, 9.0, 11.0, 15.0, 15.0, 28.0, 28.0]
    assert node.counters == zeroed(
        requests=7, failures_transient=1, backfills=2, cuts=2, refills=1, gaps=1
    )
    assert state == BackfillState(pending=[], failed={})


@pytest.mark.trio
async def test_series_added_meanwhile_neither_postpone_nor_take_the_place_of_a_refill(
    autojump_clock: Any,
) -> None:
    """Added series have rounds of their own, and the delay of a given-up series' refill
    runs on through them: they neither restart it nor make its cut."""
    gateway = Gateway(script=[reply(500)] * 4)  # the seconds' 4 attempts; the minutes answer
    async with running(gateway.transport()) as node:
        await node.series_done(2)  # told empty at 15 s: refill at 20 s
        for at, name in ((16, "5min"), (18, "15min"), (19, "30min")):
            await trio.sleep(at - anyio.current_time())
            node.send(TrackTimeframes([name]))
        await node.series_done(2 + 3 * 2 + 2)
        state = await node.state()
    assert [(s.timeframes, s.cut) for s in node.started] == [
        (["1min"], CUT),
        (["5min"], CUT + 16_000_000),
        (["15min"], CUT + 18_000_000),
        (["30min"], CUT + 19_000_000),
        (["1min"], CUT + 24_000_000),  # the refill: due at 20 s, after the round under way
    ]
    assert node.counters["refills"] == 1 and state.pending == []


@pytest.mark.trio
async def test_refills_back_off_while_history_keeps_failing(autojump_clock: Any) -> None:
    gateway = Gateway(default=reply(503))
    async with running(gateway.transport(), max_attempts=1, refill_max=20.0) as node:
        await node.series_done(10)
    # each round: both sources once at cut + 2 s, then 5, 10, 20, 20 s to the next cut
    rounds = sorted({c.at for c in gateway.calls})
    assert rounds == [8.0, 21.0, 39.0, 67.0, 95.0]
    assert node.counters["refills"] == 4


@pytest.mark.trio
async def test_a_reconnect_before_the_refill_takes_its_place(autojump_clock: Any) -> None:
    gateway = Gateway(script=[reply(500)] * 4)
    async with running(gateway.transport()) as node:
        await node.series_done(2)
        node.send(Disconnected("market", "x"), Connected("market"))
        await node.series_done(4)
        await trio.sleep(600)
    assert node.counters["refills"] == 0 and node.counters["cuts"] == 2
    assert len(gateway.calls) == 7


@pytest.mark.trio
async def test_a_refusal_is_final_no_refill(autojump_clock: Any) -> None:
    refused = answer(success=False, errorCode=1, errorMessage=None, bars=None)
    gateway = Gateway(script=[refused])
    async with running(gateway.transport()) as node:
        await node.series_done(2)
        await trio.sleep(3600)
        state = await node.state()
    assert len(gateway.calls) == 2 and node.counters["refills"] == 0
    assert state.failed == {
        f"{MNQ} 1min": "1sec history: History/retrieveBars refused: errorCode 1 (ContractNotFound)"
    }


@pytest.mark.trio
async def test_429_waits_the_retry_after_and_is_retried_until_it_succeeds(
    autojump_clock: Any,
) -> None:
    script = [reply(429, headers={"retry-after": "7"}), *[reply(429)] * 6]
    gateway = Gateway(script=script)
    async with running(gateway.transport(), max_attempts=2) as node:
        await node.series_done(2)
    # Retry-After, then backoff 2, 4, 8, 16, 30, 30 s: more attempts than max_attempts
    assert [c.at for c in gateway.calls] == [8.0, 15.0, 17.0, 21.0, 29.0, 45.0, 75.0, 105.0, 105.0]
    assert node.counters == zeroed(requests=9, backfills=1, cuts=1, gaps=1)


@pytest.mark.trio
async def test_the_rest_budget_queues_requests_instead_of_failing_them(
    autojump_clock: Any,
) -> None:
    budget = RestBudget(RestLimits(history=RateLimit(2, 30.0)))
    gateway = Gateway()
    async with running(gateway.transport(), contracts=[MNQ, MES], budget=budget) as node:
        await node.series_done(4)
    assert [c.at for c in gateway.calls] == [8.0, 8.0, 38.0, 38.0]
    assert node.counters["failures_transient"] == 0


@pytest.mark.trio
async def test_timeouts_and_transport_errors_are_retried(autojump_clock: Any) -> None:
    gateway = Gateway(
        script=[
            raising(httpx.ConnectError("connection refused")),
            slow(1000, answer()),
            raising(httpx.ReadError("reset")),
        ]
    )
    async with running(gateway.transport(), request_timeout=5.0, max_attempts=3) as node:
        await node.series_done(2)
    assert [c.at for c in gateway.calls][:3] == [8.0, 9.0, 16.0]  # 1 s, then 5 s timeout + 2 s
    assert node.counters["failures_transient"] == 1


@pytest.mark.trio
@pytest.mark.parametrize(
    ("step", "kind", "why"),
    [
        (reply(200, b"not json"), "malformed", "answer is not JSON"),
        (reply(200, b""), "malformed", "answer is not JSON"),
        (reply(200, b"[]"), "malformed", "not a retrieveBars answer"),
        (reply(200, b'{"bars": 5}'), "malformed", "not a retrieveBars answer"),
        (reply(200, b'{"bars": [], "success": "yes"}'), "malformed", "not a retrieveBars answer"),
        (reply(200, b'{"bars": [], "errorCode": 1.5}'), "malformed", "not a retrieveBars answer"),
        (reply(200, b"\xff\xfe"), "malformed", "answer is not JSON"),
        (reply(200, b"{}"), "malformed", "an answer without its bars"),  # not "no bars"
        (reply(200, b'{"success": true, "bars": null}'), "malformed", "an answer without its bars"),
        (
            answer(success=False, errorCode=1, errorMessage=None, bars=None),
            "rejected",
            "History/retrieveBars refused: errorCode 1 (ContractNotFound)",
        ),
        (reply(400, b'{"success": false}'), "rejected", "HTTP 400"),
        (reply(403), "rejected", "HTTP 403"),
        (reply(404), "rejected", "HTTP 404"),
    ],
)
async def test_bad_answers_are_counted_and_skipped(
    autojump_clock: Any, step: Answer, kind: str, why: str
) -> None:
    gateway = Gateway(script=[step])
    async with running(gateway.transport(), contracts=[MNQ, MES]) as node:
        await node.series_done(4)
        state = await node.state()
    assert len(gateway.calls) == 4  # not retried; the next request goes on
    assert node.counters[f"failures_{kind}"] == 1
    final = kind == "rejected"  # the gateway refused: not asked again
    assert (state.failed if final else state.retrying) == {f"{MNQ} 1min": f"1sec history: {why}"}
    assert not (state.retrying if final else state.failed)
    assert state.pending == [f"{MNQ} 1min"]


@pytest.mark.trio
async def test_bad_bars_are_rejected_one_by_one(autojump_clock: Any) -> None:
    good = hbar("2025-11-24T15:58:00+00:00", 10.0, 12.0, 9.0, 11.0, 5)
    gateway = Gateway(
        script=[
            answer(),
            answer(
                hbar("2025-11-24T16:00:00+00:00", 10.0, 12.0, 9.0, 11.0, 5),  # ends after 16:00
                good,
                hbar("2025-11-24T15:58:30+00:00", 10.0, 12.0, 9.0, 11.0, 5),  # unaligned
                hbar("yesterday", 10.0, 12.0, 9.0, 11.0, 5),
                hbar("2025-11-24T15:57:00+00:00", -10.0, 12.0, -11.0, 11.0, 5),
                hbar("2025-11-24T15:57:00+00:00", 10.0, 9.0, 12.0, 11.0, 5),  # high < low
                hbar("2025-11-24T15:57:00+00:00", 13.0, 12.0, 9.0, 11.0, 5),  # open above high
                hbar("2025-11-24T15:57:00+00:00", 10.0, 12.0, 9.0, 0.0, 5),
                hbar("2025-11-24T15:57:00+00:00", 10.0, 12.0, 0.0, 11.0, 5),
                hbar("2025-11-24T15:57:00+00:00", 10.0, 12.0, 9.0, 11.0, -1),
                hbar("2025-11-24T15:57:00+00:00", 10.0, 12.0, 9.0, 11.0, 1 << 63),
                hbar("0001-01-01T00:00:00+14:00", 10.0, 12.0, 9.0, 11.0, 5),  # before the window
                {**good, "o": "10"},
                {**good, "v": 1.5},
                {**good, "h": 1e999},
                {"t": "2025-11-24T15:56:00+00:00"},
                "a bar",
                None,
            ),
        ]
    )
    async with running(gateway.transport()) as node:
        await node.series_done(2)
    (fill,) = node.backfills
    assert fill.bars == [history(1_763_999_880_000_000, 10.0, 12.0, 9.0, 11.0, 5)]
    rejected = {k: v for k, v in node.counters.items() if k.startswith("bars_rejected_")}
    assert rejected == {
        "bars_rejected_malformed": 6,
        "bars_rejected_time": 2,
        "bars_rejected_price": 5,
        "bars_rejected_volume": 2,
        "bars_rejected_unaligned": 1,
        "bars_rejected_partial": 1,
        "bars_rejected_duplicate": 0,
    }
    assert node.counters["bars_received"] == 18


@pytest.mark.trio
async def test_a_bar_sent_twice_counts_once_and_summed_volumes_hold_at_int64(
    autojump_clock: Any,
) -> None:
    """Rows were summed as they came: a repeated bar counted twice, and the seconds of a
    minute could pass int64 (a bar the bars actor then refused whole)."""
    big = 1 << 62
    gateway = Gateway(
        script=[
            answer(
                hbar("2025-11-24T16:00:03+00:00", 25012.0, 25013.0, 25011.0, 25012.5, big),
                hbar("2025-11-24T16:00:01+00:00", 25011.0, 25011.5, 25010.0, 25011.5, big),
            ),
            answer(
                hbar("2025-11-24T15:59:00+00:00", 25010.25, 25012.5, 25009.0, 25011.75, 42),
                hbar("2025-11-24T15:59:00+00:00", 25010.25, 25012.5, 25009.0, 25011.75, 42),
                hbar("2025-11-24T15:59:00Z", 25010.0, 25010.0, 25010.0, 25010.0, 1),
            ),
        ]
    )
    async with running(gateway.transport(), initial_bars=4) as node:
        await node.series_done(2)
    (fill,) = node.backfills
    minute = 60_000_000
    assert fill.bars == [
        history(1_763_999_940_000_000, 25010.25, 25012.5, 25009.0, 25011.75, 42),
        history(1_763_999_940_000_000 + minute, 25011.0, 25013.0, 25010.0, 25012.5, (1 << 63) - 1),
    ]
    assert node.counters["bars_rejected_duplicate"] == 2


# --------------------------------------------------------------------- secrets


@pytest.mark.trio
async def test_the_token_never_reaches_the_logs(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fresh = "tok-SECRET-2"  # the token after the 401; a gateway echoes the one it got
    gateway = Gateway(
        script=[
            reply(401),
            raising(httpx.ConnectError(f"refused for Bearer {fresh}")),
            reply(500, fresh.encode()),
            answer(success=False, errorCode=2, errorMessage=f"token {fresh} is not valid"),
            reply(200, f'{{"bars": "{fresh}"}}'.encode()),
        ]
    )
    async with running(gateway.transport(), contracts=[MNQ, MES]) as node:
        await node.series_done(4)
        assert "SECRET" not in repr(node.actor)
        state = await node.state()
    assert node.counters["failures_rejected"] == node.counters["failures_malformed"] == 1
    assert "***" in caplog.text and "refused for Bearer" in caplog.text
    assert "SECRET" not in caplog.text
    assert "SECRET" not in repr(node.ctx.refs["stats"].told)
    assert "SECRET" not in repr(state)


# ------------------------------------------------------------------ lifecycle


@pytest.mark.trio
async def test_stop_returns_at_once_even_in_the_middle_of_a_retry(autojump_clock: Any) -> None:
    gateway = Gateway(reply(503))
    async with running(gateway.transport(), backoff_min=60.0, backoff_max=60.0) as node:
        await trio.sleep(10)
    assert anyio.current_time() == 10.0
    assert len(gateway.calls) == 1
    assert node.backfills == []


@pytest.mark.trio
async def test_the_end_of_the_inbox_ends_the_actor(autojump_clock: Any) -> None:
    actor = HistoryActor(config(initial_bars=0), transport=Gateway().transport())
    with inbox() as mailbox:
        mailbox.send_nowait(Connected("market"))
        mailbox.close()
        await actor.run(mailbox, FakeCtx(FakeAuth()))
    assert anyio.current_time() == 0.0


@pytest.mark.anyio
async def test_runs_on_every_anyio_backend() -> None:
    gateway = Gateway(
        script=[answer(), answer(hbar("2025-11-24T15:59:00+00:00", 2.0, 3.0, 1.0, 2.5, 9))]
    )
    async with running(gateway.transport(), cut_margin=0.0, settle=0.0, min_lookback=0.0) as node:
        await node.series_done(2)
    (fill,) = node.backfills
    assert [values(b) for b in fill.bars][-1:] == [(2.0, 3.0, 1.0, 2.5, 9)] or fill.bars == []


# ---------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides",
    [
        {"contracts": []},
        {"contracts": [""]},
        {"contracts": [5]},
        {"contracts": MNQ},
        {"timeframes": []},
        {"timeframes": ["7min"]},
        {"timeframes": ["1min", "fortnight"]},
        {"timeframes": "1min"},
        {"api_url": "ftp://gateway"},
        {"initial_bars": -1},
        {"initial_bars": 201, "max_bars": 200},
        {"max_bars": 59},
        {"max_attempts": 0},
        {"request_timeout": 0.0},
        {"request_timeout": float("nan")},
        {"token_timeout": float("inf")},
        {"min_lookback": -1.0},
        {"retry_after_max": float("nan")},
        {"cut_margin": -1.0},
        {"settle": float("inf")},
        {"backoff_min": 10.0, "backoff_max": 1.0},
        {"backoff_jitter": 1.0},
        {"refill_min": 0.0},
        {"refill_max": float("inf")},
        {"refill_min": 60.0, "refill_max": 30.0},
    ],
)
def test_bad_config_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        config(**overrides)


@pytest.mark.trio
async def test_duplicate_contracts_and_timeframes_are_asked_once(autojump_clock: Any) -> None:
    gateway = Gateway()
    frames = ["1min", "5min", "1min"]
    async with running(gateway.transport(), contracts=[MNQ, MNQ], timeframes=frames) as node:
        await node.series_done(2)
        await trio.sleep(600)
        assert repr(node.actor) == "<HistoryActor hub=up want=0 cuts=[]>"
    assert [(c.body["contractId"], c.body["unit"]) for c in gateway.calls] == [(MNQ, 1), (MNQ, 2)]


def test_config_defaults() -> None:
    cfg = HistoryConfig(contracts=[MNQ], timeframes=["1min"])
    assert (cfg.initial_bars, cfg.max_bars, cfg.live) == (200, 20_000, False)
    assert (cfg.cut_margin, cfg.settle) == (6.0, 2.0)
    assert (cfg.refill_min, cfg.refill_max) == (5.0, 300.0)
    assert cfg.api_url == "https://api.topstepx.com"


@pytest.mark.trio
async def test_series_subscribed_at_run_time_get_their_own_start_up_backfill(
    autojump_clock: Any,
) -> None:
    gateway = Gateway()
    async with running(gateway.transport(), timeframes=["1min"]) as node:
        await node.series_done(2)  # the start-up back-fill of MNQ 1min
        node.send(SubscribeContract(MES), SubscribeContract(MNQ))  # MNQ is known: nothing
        await node.series_done(4)
        node.send(TrackTimeframes(["5min", "1min", "bogus"]))  # a bad list changes nothing
        node.send(TrackTimeframes(["5min", "1min"]))
        await node.series_done(8)
        await trio.sleep(600)
        assert len(gateway.calls) == 8
    assert [(c.body["contractId"], c.body["unit"]) for c in gateway.calls[2:]] == [
        (MES, 1),
        (MES, 2),
        (MNQ, 1),
        (MES, 1),
        (MNQ, 2),
        (MES, 2),
    ]
    assert [(s.contract, s.timeframes) for s in node.started] == [
        (MNQ, ["1min"]),
        (MES, ["1min"]),
        (MNQ, ["5min"]),
        (MES, ["5min"]),
    ]


@pytest.mark.trio
async def test_series_added_every_few_seconds_never_postpone_a_gaps_back_fill(
    autojump_clock: Any,
) -> None:
    """Each subscription gave every series still waiting a new cut, and the round for the
    old one was dropped: timeframes added every 3 s kept a gap's back-fill from ever being
    asked for (found by a hunt). A waiting series keeps its cut; an added one gets its own."""
    added = ["2min", "3min", "4min", "5min", "6min", "10min", "12min", "15min", "20min", "30min"]
    gateway = Gateway()
    async with running(gateway.transport(), initial_bars=0) as node:
        await node.series_done(2)
        await trio.sleep(100 - anyio.current_time())
        node.send(Disconnected("market", "x"))
        await trio.sleep(10)
        node.send(Connected("market"))  # the gap's cut: 116 s
        for k, name in enumerate(added):
            await trio.sleep(111 + 3 * k - anyio.current_time())
            node.send(TrackTimeframes([name]))  # cut 117 + 3 k s
        await node.series_done(2 + 2 + 2 * len(added) - 1)  # 3min's cut is a whole minute
        state = await node.state()
    gap = gateway.calls[2:4]  # settle (2 s) after its cut, before any added series
    assert [(c.at, c.body["unit"], c.body["startTime"]) for c in gap] == [
        (118.0, 1, "2025-11-24T16:01:00+00:00"),
        (118.0, 2, "2025-11-24T16:00:00+00:00"),  # the bar before the disconnect's
    ]
    assert [(b.timeframe, b.cut) for b in node.backfills] == [
        ("1min", CUT),
        ("1min", int((START + 116) * 1e6)),
        *[(name, int((START + 117 + 3 * k) * 1e6)) for k, name in enumerate(added)],
    ]
    assert [s.timeframes for s in node.started] == [["1min"], ["1min"], *[[n] for n in added]]
    assert state.pending == [] and node.counters["cuts"] == 2 + len(added)
