"""History actor: start-up and gap back-fills, exact conversion, retries, failures counted."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
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
    Bar,
    ChildStarted,
    CountersReported,
    GetToken,
    RefreshToken,
    Stop,
    TokenIssued,
    TrackTimeframes,
)
from protocols.secrets import Secret
from pxnode.sim import GatewaySim, SimConfig, mock_transport
from supervisors.mailbox import Mailbox, MailboxSpec

START = 1_764_000_000.0  # 2025-11-24T16:00:00Z, a Monday; virtual time 0
MNQ = "CON.F.US.MNQ.Z25"
MES = "CON.F.US.MES.Z25"
TOKEN = "tok-SECRET-1"
END = "2025-11-24T16:00:00+00:00"


def wall() -> float:
    return START + anyio.current_time()


# -------------------------------------------------------------------- doubles


class FakeRef:
    """Records what it is told; ``wait_for`` sleeps until enough has arrived."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.told: list[Any] = []
        self._changed: anyio.Event | None = None

    def tell_nowait(self, msg: Any) -> None:
        self.told.append(msg)
        if self._changed is not None:
            self._changed.set()

    async def tell(self, msg: Any) -> None:
        self.tell_nowait(msg)
        await anyio.lowlevel.checkpoint()

    async def ask(self, msg: Any, timeout: float) -> Any:
        raise TypeError(f"{self.name} is not asked")

    async def wait_for(self, n: int) -> None:
        while len(self.told) < n:
            self._changed = anyio.Event()
            await self._changed.wait()


class FakeAuth(FakeRef):
    """Answers ``GetToken`` with ``mint()``'s token; a ``RefreshToken`` mints the next."""

    def __init__(self, mint: Callable[[], str] | None = None) -> None:
        super().__init__("auth")
        self.mint = mint or iter(f"tok-SECRET-{n}" for n in range(1, 100)).__next__
        self.token = self.mint()
        self.asks = 0
        self.reply: Any = None  # answer instead of a token (an exception is raised)

    def tell_nowait(self, msg: Any) -> None:
        super().tell_nowait(msg)
        if isinstance(msg, RefreshToken):
            self.token = self.mint()

    async def ask(self, msg: Any, timeout: float) -> Any:
        assert isinstance(msg, GetToken)
        self.asks += 1
        await anyio.lowlevel.checkpoint()
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply or TokenIssued(token=Secret(self.token), expires_at=wall() + 3600)


class FakeCtx:
    name = "history"

    def __init__(self, auth: FakeAuth) -> None:
        self.refs: dict[str, FakeRef] = {"auth": auth, "bars": FakeRef("bars")}
        self.refs["stats"] = FakeRef("stats")
        self.healthy = 0

    def ref(self, name: str) -> FakeRef:
        return self.refs[name]

    def wall_time(self) -> float:
        return wall()

    def report_healthy(self) -> None:
        self.healthy += 1


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
    }
    settings.update(overrides)
    return HistoryConfig(**settings)


@dataclass
class Running:
    actor: HistoryActor
    ctx: FakeCtx
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
        return self.ctx.refs["bars"].told

    @property
    def counters(self) -> dict[str, int]:
        reports = self.ctx.refs["stats"].told
        assert all(isinstance(r, CountersReported) and r.source == "history" for r in reports)
        return dict(reports[-1].counters) if reports else {}

    async def series_done(self, n: int) -> None:
        """Wait until ``n`` contract x timeframe requests ended (one report each)."""
        await self.ctx.refs["stats"].wait_for(n)


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
    actor = HistoryActor(config(**overrides), transport=transport)
    ctx = FakeCtx(auth or FakeAuth())
    with inbox() as mailbox, anyio.fail_after(24 * 3600):  # a hang fails in virtual time
        async with anyio.create_task_group() as tg:
            tg.start_soon(actor.run, mailbox, ctx)
            yield Running(actor, ctx, mailbox)
            mailbox.send_nowait(Stop())


def zeroed(**counts: int) -> dict[str, int]:
    return {**dict.fromkeys(COUNTERS, 0), **counts}


# ------------------------------------------------------------------ start-up


@pytest.mark.trio
async def test_initial_backfill_asks_every_timeframe_in_the_gateway_units(
    autojump_clock: Any,
) -> None:
    gateway = Gateway()
    frames = ["1sec", "5min", "4hr", "1day", "1week", "1month"]
    async with running(gateway.transport(), timeframes=frames, contracts=[MNQ, MES]) as node:
        await node.series_done(12)
        assert node.ctx.healthy == 1
    assert gateway.field("contractId") == [MNQ] * 6 + [MES] * 6
    assert gateway.field("unit")[:6] == [1, 2, 3, 4, 5, 6]
    assert gateway.field("unitNumber")[:6] == [1, 5, 4, 1, 1, 1]
    assert set(gateway.field("limit")) == {200}
    assert set(gateway.field("includePartialBar")) == {False}
    assert set(gateway.field("live")) == {False}
    assert set(gateway.field("endTime")) == {END}
    # 200 bars back (x1.5 for closed days) and never less than min_lookback (4 days)
    assert gateway.field("startTime")[:6] == [
        "2025-11-20T15:55:00+00:00",
        "2025-11-19T15:00:00+00:00",
        "2025-10-01T16:00:00+00:00",
        "2025-01-12T04:00:00+00:00",
        "2020-02-08T04:00:00+00:00",
        "2000-05-23T04:00:00+00:00",
    ]
    assert {c.authorization for c in gateway.calls} == {f"Bearer {TOKEN}"}
    assert node.backfills == []  # nothing came back, nothing to merge
    assert node.counters == zeroed(requests=12)


@pytest.mark.trio
async def test_history_bars_are_converted_exactly_oldest_first(autojump_clock: Any) -> None:
    gateway = Gateway(
        answer(
            hbar("2025-11-24T15:59:00+00:00", 25010.25, 25012.5, 25009.0, 25011.75, 42),
            hbar("2025-11-24T09:58:00-06:00", 25000.0, 25010.5, 24999.25, 25010.25, 7),
            hbar("2025-11-24T15:57:00Z", 24990.5, 25001.0, 24990.5, 25000.0, 1),
            hbar("2025-11-24T15:56:00", 24991.0, 24991.0, 24991.0, 24991.0, 0),
        )
    )
    async with running(gateway.transport(), initial_bars=4) as node:
        await node.series_done(1)
    assert gateway.field("limit") == [4]
    assert node.backfills == [
        BackfillBars(
            MNQ,
            "1min",
            [
                Bar(MNQ, "1min", 1_763_999_760_000_000, 24991.0, 24991.0, 24991.0, 24991.0, 0, 0),
                Bar(MNQ, "1min", 1_763_999_820_000_000, 24990.5, 25001.0, 24990.5, 25000.0, 1, 0),
                Bar(MNQ, "1min", 1_763_999_880_000_000, 25000.0, 25010.5, 24999.25, 25010.25, 7, 0),
                Bar(
                    MNQ, "1min", 1_763_999_940_000_000, 25010.25, 25012.5, 25009.0, 25011.75, 42, 0
                ),
            ],
        )
    ]
    assert node.counters == zeroed(requests=1, bars_received=4, backfills=1)


def sim_gateway() -> GatewaySim:
    """The simulated gateway, built inside the test: its clock is the virtual one."""
    return GatewaySim(SimConfig(rate=50, token_ttl=3600, contracts=(MNQ,)), wall_time=wall)


def sim_bar_values(gateway: GatewaySim, start: float, length: float) -> tuple[Any, ...]:
    trades = gateway.sim.recent_trades(MNQ, since=start, until=start + length)
    prices = [t.price for t in trades]
    return prices[0], max(prices), min(prices), prices[-1], sum(t.volume for t in trades)


@pytest.mark.trio
async def test_backfill_from_the_sim_is_its_trades_and_the_bars_actor_merges_all(
    autojump_clock: Any,
) -> None:
    gateway = sim_gateway()
    await trio.sleep(600)
    gateway.sim.advance(wall())
    auth = FakeAuth(lambda: gateway.tokens.mint("demo"))
    frames = ["1sec", "1min", "5min", "1hr", "4hr", "1day"]
    async with running(
        mock_transport(gateway.rest), auth, timeframes=frames, initial_bars=5
    ) as node:
        await node.series_done(len(frames))
    assert node.counters["failures_transient"] == 0
    by_frame = {b.timeframe: b.bars for b in node.backfills}
    assert list(by_frame) == frames and all(len(bars) == 5 for bars in by_frame.values())
    minutes = by_frame["1min"]
    assert [b.start for b in minutes] == [int((START + 60 * k) * 1e6) for k in range(5, 10)]
    for bar in minutes:
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == sim_bar_values(
            gateway, bar.start / 1e6, 60
        )
    assert by_frame["1sec"][-1].start == int((START + 599) * 1e6)  # the last closed second
    bars = BarsActor(frames)
    for msg in node.backfills:
        bars.on_backfill(msg)
    assert bars.counters["backfill_inserted"] == 5 * len(frames)
    assert bars.counters["backfill_rejected"] == 0


# ----------------------------------------------------------------------- gaps


@pytest.mark.trio
async def test_a_gap_is_fetched_once_from_the_bar_before_the_disconnect(
    autojump_clock: Any,
) -> None:
    gateway = Gateway()
    frames = ["1min", "5min", "4hr"]
    async with running(gateway.transport(), timeframes=frames, initial_bars=0) as node:
        await trio.sleep(100)
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
        await node.series_done(3)
        node.send(Connected("market", "abc"))  # no disconnect before it: no gap
        await trio.sleep(600)
        assert len(gateway.calls) == 3
    assert [c.at for c in gateway.calls] == [200.0] * 3
    assert gateway.field("startTime") == [
        "2025-11-24T16:00:00+00:00",  # 16:01:40 is in the 16:01 bar; the one before
        "2025-11-24T15:55:00+00:00",
        "2025-11-24T11:00:00+00:00",  # 4hr bars start at 05:00, 09:00 Chicago
    ]
    assert set(gateway.field("endTime")) == {"2025-11-24T16:03:20+00:00"}
    assert set(gateway.field("limit")) == {20_000}
    assert node.counters == zeroed(requests=3, gaps=1)


@pytest.mark.trio
async def test_the_first_connect_after_start_fills_in_since_the_start(autojump_clock: Any) -> None:
    gateway = Gateway()
    async with running(gateway.transport(), initial_bars=0) as node:
        await trio.sleep(45)
        node.send(Connected("market"))
        await node.series_done(1)
    assert gateway.field("startTime") == ["2025-11-24T15:59:00+00:00"]
    assert gateway.field("endTime") == ["2025-11-24T16:00:45+00:00"]


@pytest.mark.trio
async def test_gaps_during_a_back_fill_coalesce_into_one_from_the_earliest(
    autojump_clock: Any,
) -> None:
    gateway = Gateway(script=[slow(200, answer())])
    async with running(gateway.transport(), request_timeout=300.0) as node:
        for at, event in (
            (70, Disconnected("market", "x")),
            (80, Connected("market")),
            (130, Disconnected("market", "y")),
            (140, Connected("market")),
        ):
            await trio.sleep(at - anyio.current_time())
            node.send(event)
        await node.series_done(2)
        await trio.sleep(600)
    assert [c.at for c in gateway.calls] == [0.0, 200.0]
    assert gateway.field("startTime")[1] == "2025-11-24T16:00:00+00:00"  # from 16:01:10
    assert node.counters["gaps"] == 1


@pytest.mark.trio
async def test_a_gap_with_more_bars_than_max_bars_is_counted_truncated(
    autojump_clock: Any,
) -> None:
    bars = [hbar(f"2025-11-24T16:0{m}:00+00:00", 1.0, 1.0, 1.0, 1.0, 1) for m in (4, 3)]
    gateway = Gateway(answer(*bars))
    async with running(gateway.transport(), initial_bars=0, max_bars=2) as node:
        await trio.sleep(300)
        node.send(Connected("market"))
        await node.series_done(1)
    assert len(node.backfills[0].bars) == 2
    assert node.counters["truncated"] == 1


@pytest.mark.trio
async def test_a_gap_from_the_sim_after_its_token_expired(autojump_clock: Any) -> None:
    gateway = sim_gateway()
    auth = FakeAuth(lambda: gateway.tokens.mint("demo"))
    async with running(mock_transport(gateway.rest), auth, initial_bars=0) as node:
        node.send(Disconnected("market", "drop"))
        await trio.sleep(400)
        gateway.sim.advance(wall())
        gateway.tokens.expire_all()
        gateway.rest.pending_500 = 2
        node.send(Connected("market"))
        await node.series_done(1)
    assert auth.told == [RefreshToken()]
    (fill,) = node.backfills
    assert [b.start for b in fill.bars] == [int((START + 60 * k) * 1e6) for k in range(-1, 6)]
    for bar in fill.bars[1:]:
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == sim_bar_values(
            gateway, bar.start / 1e6, 60
        )
    assert node.counters["requests"] == 4  # 500, 500, 401, 200


# ------------------------------------------------------------- token handling


@pytest.mark.trio
async def test_a_401_refreshes_the_token_and_retries_once(autojump_clock: Any) -> None:
    bar = hbar("2025-11-24T15:00:00+00:00", 1.0, 2.0, 0.5, 1.5, 3)
    gateway = Gateway(only_for("tok-SECRET-2", answer(bar)))
    async with running(gateway.transport(), timeframes=["1hr"]) as node:
        await node.series_done(1)
    assert [c.authorization for c in gateway.calls] == [
        "Bearer tok-SECRET-1",
        "Bearer tok-SECRET-2",
    ]
    assert node.auth.told == [RefreshToken()]
    assert node.counters == zeroed(requests=2, bars_received=1, backfills=1)


@pytest.mark.trio
async def test_a_401_with_the_fresh_token_too_is_counted_and_skipped(autojump_clock: Any) -> None:
    gateway = Gateway(only_for("never", answer()))
    async with running(gateway.transport(), contracts=[MNQ, MES]) as node:
        await node.series_done(2)
    assert node.auth.told == [RefreshToken(), RefreshToken()]
    assert node.counters == zeroed(requests=4, failures_unauthorized=2)


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
        await node.series_done(1)
    assert gateway.calls == []
    assert node.counters == zeroed(failures_auth=1)


# ---------------------------------------------------------------- REST errors


@pytest.mark.trio
async def test_5xx_is_retried_with_backoff_then_counted_and_the_actor_carries_on(
    autojump_clock: Any,
) -> None:
    gateway = Gateway(reply(500, b'{"success": false}'))
    async with running(gateway.transport(), contracts=[MNQ, MES]) as node:
        await node.series_done(2)
        assert [c.at for c in gateway.calls] == [0.0, 1.0, 3.0, 7.0, 7.0, 8.0, 10.0, 14.0]
        assert node.counters == zeroed(requests=8, failures_transient=2)
        gateway.default = answer(hbar("2025-11-24T15:59:00+00:00", 1.0, 1.0, 1.0, 1.0, 1))
        node.send(Disconnected("market", "x"), Connected("market"))
        await node.series_done(4)
    assert [b.contract for b in node.backfills] == [MNQ, MES]


@pytest.mark.trio
async def test_429_waits_the_retry_after_then_succeeds(autojump_clock: Any) -> None:
    gateway = Gateway(script=[reply(429, headers={"retry-after": "7"}), reply(429)])
    async with running(gateway.transport()) as node:
        await node.series_done(1)
    assert [c.at for c in gateway.calls] == [0.0, 7.0, 9.0]  # Retry-After, then backoff 2 s
    assert node.counters == zeroed(requests=3)


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
        await node.series_done(1)
    assert [c.at for c in gateway.calls] == [0.0, 1.0, 8.0]  # 1 s, then 5 s timeout + 2 s
    assert node.counters == zeroed(requests=3, failures_transient=1)


@pytest.mark.trio
@pytest.mark.parametrize(
    ("step", "kind"),
    [
        (reply(200, b"not json"), "malformed"),
        (reply(200, b""), "malformed"),
        (reply(200, b"[]"), "malformed"),
        (reply(200, b'{"bars": 5}'), "malformed"),
        (reply(200, b'{"bars": [], "success": "yes"}'), "malformed"),
        (reply(200, b'{"bars": [], "errorCode": 1.5}'), "malformed"),
        (reply(200, b"\xff\xfe"), "malformed"),
        (answer(success=False, errorCode=1, errorMessage="contract not found"), "rejected"),
        (reply(400, b'{"success": false}'), "rejected"),
        (reply(403), "rejected"),
        (reply(404), "rejected"),
    ],
)
async def test_bad_answers_are_counted_and_skipped(
    autojump_clock: Any, step: Answer, kind: str
) -> None:
    gateway = Gateway(script=[step])
    async with running(gateway.transport(), contracts=[MNQ, MES]) as node:
        await node.series_done(2)
    assert len(gateway.calls) == 2  # not retried; the next series goes on
    assert node.counters[f"failures_{kind}"] == 1
    assert [b.contract for b in node.backfills] == []


@pytest.mark.trio
async def test_bad_bars_are_rejected_one_by_one(autojump_clock: Any) -> None:
    good = hbar("2025-11-24T15:58:00+00:00", 10.0, 12.0, 9.0, 11.0, 5)
    gateway = Gateway(
        answer(
            hbar("2025-11-24T16:00:00+00:00", 10.0, 12.0, 9.0, 11.0, 5),  # not closed at 16:00
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
        )
    )
    async with running(gateway.transport()) as node:
        await node.series_done(1)
    assert node.backfills == [
        BackfillBars(
            MNQ, "1min", [Bar(MNQ, "1min", 1_763_999_880_000_000, 10.0, 12.0, 9.0, 11.0, 5, 0)]
        )
    ]
    rejected = {k: v for k, v in node.counters.items() if k.startswith("bars_rejected_")}
    assert rejected == {
        "bars_rejected_malformed": 6,
        "bars_rejected_time": 2,
        "bars_rejected_price": 5,
        "bars_rejected_volume": 2,
        "bars_rejected_unaligned": 1,
        "bars_rejected_partial": 1,
    }
    assert node.counters["bars_received"] == 18


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
        await node.series_done(2)
        assert "SECRET" not in repr(node.actor)
    assert node.counters["failures_rejected"] == node.counters["failures_malformed"] == 1
    assert "***" in caplog.text and "refused for Bearer" in caplog.text
    assert "SECRET" not in caplog.text
    assert "SECRET" not in repr(node.ctx.refs["stats"].told)


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
    gateway = Gateway(answer(hbar("2025-11-24T15:59:00+00:00", 2.0, 3.0, 1.0, 2.5, 9)))
    async with running(gateway.transport()) as node:
        await node.series_done(1)
    assert node.backfills == [
        BackfillBars(
            MNQ, "1min", [Bar(MNQ, "1min", 1_763_999_940_000_000, 2.0, 3.0, 1.0, 2.5, 9, 0)]
        )
    ]


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
        {"max_bars": 0},
        {"max_attempts": 0},
        {"request_timeout": 0.0},
        {"request_timeout": float("nan")},
        {"token_timeout": float("inf")},
        {"min_lookback": -1.0},
        {"retry_after_max": float("nan")},
        {"backoff_min": 10.0, "backoff_max": 1.0},
        {"backoff_jitter": 1.0},
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
        assert repr(node.actor) == "<HistoryActor hub=unknown gap_from=None>"
    assert [(c.body["contractId"], c.body["unitNumber"]) for c in gateway.calls] == [
        (MNQ, 1),
        (MNQ, 5),
    ]


def test_config_defaults() -> None:
    cfg = HistoryConfig(contracts=[MNQ], timeframes=["1min"])
    assert (cfg.initial_bars, cfg.max_bars, cfg.live) == (200, 20_000, False)
    assert cfg.api_url == "https://api.topstepx.com"


@pytest.mark.trio
async def test_series_subscribed_at_run_time_get_their_own_start_up_backfill(
    autojump_clock: Any,
) -> None:
    gateway = Gateway()
    async with running(gateway.transport(), timeframes=["1min"]) as node:
        await node.series_done(1)  # the start-up back-fill of MNQ 1min
        node.send(SubscribeContract(MES), SubscribeContract(MNQ))  # MNQ is known: nothing
        await node.series_done(2)
        node.send(TrackTimeframes(["5min", "1min", "bogus"]))  # a bad list changes nothing
        node.send(TrackTimeframes(["5min", "1min"]))
        await node.series_done(4)
        await trio.sleep(600)
        assert len(gateway.calls) == 4
    assert [(c.body["contractId"], c.body["unitNumber"]) for c in gateway.calls] == [
        (MNQ, 1),
        (MES, 1),
        (MNQ, 5),
        (MES, 5),
    ]
    assert set(gateway.field("limit")) == {200}
