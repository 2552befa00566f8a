"""The account actor: user-hub events folded into accounts, positions, working orders and
fills; bounded, and every refused frame counted; the REST searches at start and after
every reconnect, merged with the hub, every bad answer counted and tried again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from actors.account import AccountActor, AccountConfig
from protocols.account import (
    AccountChanged,
    AccountSynced,
    Fill,
    FillReceived,
    OrderChanged,
    PositionChanged,
    open_pnl,
)
from protocols.hubs import Connected, SubscribeAccount
from protocols.messages import AuthFailureReported, HubMessageReceived, RefreshToken, Stop
from pxnode.testing import EPOCH, FakeAuth, FakeContext, MemoryInbox, RecordingRef, until

ACCOUNT = {"id": 7001, "name": "PRAC", "balance": 50_000.0, "canTrade": True,
           "isVisible": True, "simulated": True}  # fmt: skip
MNQ = "CON.F.US.MNQ.Z25"


def order(id_: int, status: int, **more: Any) -> dict[str, Any]:
    return {"id": id_, "accountId": 7001, "contractId": MNQ, "creationTimestamp": f"T{id_}",
            "status": status, "type": 1, "side": 1, "size": 2, "limitPrice": 21100.0,
            **more}  # fmt: skip


def position(size: int, type_: int = 1) -> dict[str, Any]:
    return {"id": 6001, "accountId": 7001, "contractId": MNQ, "creationTimestamp": "T",
            "type": type_, "size": size, "averagePrice": 21000.0}  # fmt: skip


def trade(id_: int) -> dict[str, Any]:
    return {"id": id_, "accountId": 7001, "contractId": MNQ, "creationTimestamp": "T",
            "price": 21000.0, "profitAndLoss": None, "fees": 0.37, "side": 0, "size": 1,
            "voided": False, "orderId": 9001}  # fmt: skip


def args(payload: object, *, wrapped: bool = False) -> msgspec.Raw:
    body = {"action": 1, "data": payload} if wrapped else payload
    return msgspec.Raw(msgspec.json.encode([body]))


def test_events_build_the_current_state() -> None:
    actor = AccountActor()
    events = [
        actor.on_user_event("GatewayUserAccount", args(ACCOUNT)),
        actor.on_user_event("GatewayUserPosition", args(position(2), wrapped=True)),
        actor.on_user_event("GatewayUserOrder", args(order(9002, 1), wrapped=True)),
        actor.on_user_event("GatewayUserOrder", args(order(9003, 6))),
        actor.on_user_event("GatewayUserTrade", args(trade(8001))),
    ]
    assert [type(e) for e in events] == [
        AccountChanged, PositionChanged, OrderChanged, OrderChanged, FillReceived,
    ]  # fmt: skip
    state = actor.state()
    assert [a.balance for a in state.accounts] == [50_000.0]
    (pos,) = state.positions
    assert (pos.side, pos.size, pos.average_price) == ("long", 2, 21000.0)
    assert [(o.id, o.status, o.type, o.side) for o in state.orders] == [
        (9002, "open", "limit", "ask"),
        (9003, "pending", "limit", "ask"),
    ]
    assert [(f.side, f.size, f.fees) for f in state.fills] == [("bid", 1, 0.37)]
    assert open_pnl(pos, 21010.0, 2.0) == 40.0


def test_a_filled_order_stops_working_and_a_flat_position_closes() -> None:
    actor = AccountActor()
    actor.on_user_event("GatewayUserOrder", args(order(9002, 1)))
    actor.on_user_event("GatewayUserPosition", args(position(2)))
    actor.on_user_event("GatewayUserOrder", args(order(9002, 2, fillVolume=2)))
    actor.on_user_event("GatewayUserPosition", args(position(0)))
    assert actor.state().orders == () and actor.state().positions == ()


def test_a_short_position_profits_when_the_price_falls() -> None:
    actor = AccountActor()
    actor.on_user_event("GatewayUserPosition", args(position(3, type_=2)))
    (pos,) = actor.state().positions
    assert pos.side == "short" and open_pnl(pos, 20990.0, 2.0) == 60.0


def test_unknown_enum_values_read_unknown_not_fail() -> None:
    actor = AccountActor()
    actor.on_user_event("GatewayUserOrder", args(order(1, 1, type=42, side=9)))
    (o,) = actor.state().orders
    assert (o.type, o.side) == ("unknown", "unknown")


def test_fills_are_bounded_and_the_dropped_counted() -> None:
    actor = AccountActor(max_fills=3)
    for k in range(10):
        actor.on_user_event("GatewayUserTrade", args(trade(k)))
    state = actor.state()
    assert [f.id for f in state.fills] == [7, 8, 9]
    assert (state.fills_seen, state.fills_dropped) == (10, 7)


def test_fills_and_orders_keep_the_order_of_their_instants_not_of_their_text() -> None:
    """Sorted as text, 20:00+05:30 (14:30Z) came after 15:00Z: the oldest fill was kept."""
    actor = AccountActor(max_fills=2)
    stamps = ["2025-01-21T20:00:00+05:30", "2025-01-21T15:00:00+00:00", "2025-01-21T15:30:00Z"]
    for id_, at in enumerate(stamps, 1):
        actor.on_user_event("GatewayUserTrade", args({**trade(id_), "creationTimestamp": at}))
        actor.on_user_event("GatewayUserOrder", args(order(id_, 1, creationTimestamp=at)))
    state = actor.state()
    assert [f.id for f in state.fills] == [2, 3]
    assert [o.id for o in state.orders] == [1, 2, 3]
    assert (state.fills_seen, state.fills_dropped) == (3, 1)


def a_fill(id_: int, at: str) -> Fill:
    return Fill(id=id_, account_id=7001, contract=MNQ, order_id=9001, side="buy", size=1,
                price=21000.0, fees=0.37, profit_and_loss=None, at=at, voided=False)  # fmt: skip


def test_a_fill_listed_twice_is_told_once_and_a_resync_brings_no_news() -> None:
    """A repeated fill was told twice; the fills evicted by the bound came back at every
    sync, counted as seen and dropped again."""
    actor = AccountActor(max_fills=3)
    fills = [a_fill(k, f"2025-01-21T15:0{k}:00Z") for k in range(5)]
    told = []
    for _ in range(3):
        events = actor.book.sync_account(7001, ([], True), ([], True), fills + fills)
        told.append([e.fill.id for e in events if isinstance(e, FillReceived)])
    assert told == [[2, 3, 4], [], []]
    state = actor.state()
    assert [f.id for f in state.fills] == [2, 3, 4]
    assert (state.fills_seen, state.fills_dropped) == (5, 2)


def test_an_opening_fill_without_a_profit_and_loss_key_is_a_fill() -> None:
    """The live user hub leaves null fields out: a half-turn has no profitAndLoss at all."""
    actor = AccountActor()
    opening = {k: v for k, v in trade(8003).items() if k != "profitAndLoss"}
    event = actor.on_user_event("GatewayUserTrade", args(opening, wrapped=True))
    assert isinstance(event, FillReceived) and event.fill.profit_and_loss is None
    assert actor.counters["rejected"] == 0
    assert [f.id for f in actor.state().fills] == [8003]


def test_tables_are_bounded() -> None:
    actor = AccountActor(max_items=2)
    for k in range(5):
        actor.on_user_event("GatewayUserOrder", args(order(k, 1)))
    assert len(actor.state().orders) == 2 and actor.counters["over_bound"] == 3
    assert actor.on_user_event("GatewayUserOrder", args(order(0, 3))) is not None
    assert len(actor.state().orders) == 1


@pytest.mark.parametrize(
    "target,arguments",
    [
        ("GatewayUserOrder", b"not json"),
        ("GatewayUserOrder", b"[]"),  # wrong arity
        ("GatewayUserOrder", b"[1, 2]"),
        ("GatewayUserOrder", b'[{"id": "x"}]'),  # wrong types
        ("GatewayUserPosition", b'[{"action": 1, "data": {"size": 1}}]'),  # fields missing
        ("GatewayUserPosition", msgspec.json.encode([position(-3)])),  # was taken as closed
        ("GatewayUserMystery", msgspec.json.encode([ACCOUNT])),  # unknown target
    ],
)
def test_every_bad_frame_is_counted_not_raised(target: str, arguments: bytes) -> None:
    actor = AccountActor()
    assert actor.on_user_event(target, msgspec.Raw(arguments)) is None
    assert actor.counters["rejected"] == 1 and actor.state().orders == ()


# ------------------------------------------------------------- the REST searches

START = EPOCH  # 2025-11-24T16:00:00Z, virtual time 0; the trading day opened 23:00Z before
PATHS = ("/api/Account/search", "/api/Position/searchOpen", "/api/Order/searchOpen",
         "/api/Trade/search")  # fmt: skip
CONTRACT = "/api/Contract/searchById"
MNQ_CONTRACT = {"id": MNQ, "name": "MNQZ5", "description": "Micro E-mini Nasdaq-100",
                "tickSize": 0.25, "tickValue": 0.5, "activeContract": True,
                "symbolId": "F.US.MNQ"}  # fmt: skip
Answer = Callable[[httpx.Request], Awaitable[httpx.Response]]


def ok(field: str, items: Any) -> Answer:
    return reply(200, {"success": True, "errorCode": 0, "errorMessage": None, field: items})


def reply(status: int, body: object = b"", headers: dict[str, str] | None = None) -> Answer:
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)

    async def step(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers)

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
            return httpx.Response(401)
        return await then(request)

    return step


DEFAULTS: dict[str, Answer] = {
    PATHS[0]: ok("accounts", [ACCOUNT]),
    PATHS[1]: ok("positions", [position(2)]),
    PATHS[2]: ok("orders", [order(9002, 1)]),
    PATHS[3]: ok("trades", [trade(8001), trade(8002)]),
    CONTRACT: ok("contract", MNQ_CONTRACT),
}


@dataclass
class Gateway:
    """Answers each path from its script (in order), then with the default answer."""

    defaults: dict[str, Answer] = field(default_factory=lambda: dict(DEFAULTS))
    script: dict[str, list[Answer]] = field(default_factory=dict)
    calls: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append((anyio.current_time(), path, msgspec.json.decode(request.content)))
        steps = self.script.get(path)
        return await (steps.pop(0) if steps else self.defaults[path])(request)

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.calls]


@dataclass
class Rig:
    actor: AccountActor
    ctx: FakeContext
    inbox: MemoryInbox
    gateway: Gateway

    def told(self, kind: type) -> list[Any]:
        return [m for m in self.ctx.told("topic.account") if isinstance(m, kind)]


@asynccontextmanager
async def running(
    gateway: Gateway | None = None, *, accounts: tuple[int, ...] = (), **settings: Any
) -> AsyncIterator[Rig]:
    """The actor with its REST side against ``gateway``; stopped at the end of the block."""
    gateway = gateway or Gateway()
    config = AccountConfig(
        api_url="https://gateway.test", accounts=list(accounts), backoff_jitter=0.0, **settings
    )
    actor = AccountActor(config=config, transport=httpx.MockTransport(gateway.handle))
    refs = [FakeAuth(), RecordingRef("topic.account"), RecordingRef("connection_user")]
    rig = Rig(actor, FakeContext("account", refs), MemoryInbox(), gateway)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(actor.run, rig.inbox, rig.ctx)
            yield rig
            rig.inbox.send_nowait(Stop())
    finally:
        rig.inbox.close()


def auth_of(rig: Rig) -> FakeAuth:
    auth = rig.ctx.refs["auth"]
    assert isinstance(auth, FakeAuth)
    return auth


@pytest.mark.trio
async def test_the_user_hub_up_starts_the_searches(autojump_clock: object) -> None:
    async with running() as rig:
        await anyio.sleep(1)
        assert rig.gateway.calls == []  # waits for the hub (start_grace 30 s)
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(1)
    assert rig.gateway.paths() == [*PATHS, CONTRACT]  # 1 + 3 per account + 1 per contract
    bodies = [body for _, _, body in rig.gateway.calls]
    assert bodies[:3] == [{"onlyActiveAccounts": True}, {"accountId": 7001}, {"accountId": 7001}]
    assert bodies[3] == {"accountId": 7001, "startTimestamp": "2025-11-23T23:00:00+00:00",
                         "endTimestamp": None}  # the trading day's open, 17:00 Chicago  # fmt: skip
    state = rig.actor.state()
    assert [a.id for a in state.accounts] == [7001]
    assert [(p.contract, p.size) for p in state.positions] == [(MNQ, 2)]
    assert [o.id for o in state.orders] == [9002] and [f.id for f in state.fills] == [8001, 8002]
    assert state.synced_at == START + 1 and state.sync_error is None
    assert [type(e) for e in rig.ctx.told("topic.account")] == [
        AccountChanged, PositionChanged, OrderChanged, FillReceived, FillReceived, AccountSynced,
    ]  # fmt: skip
    assert rig.ctx.told("connection_user") == [SubscribeAccount(7001)]  # none configured
    assert rig.gateway.calls[4][2] == {"contractId": MNQ}
    assert state.point_values == {MNQ: 2.0}  # tickValue 0.5 per tickSize 0.25
    assert rig.actor.counters["requests"] == 5 and rig.actor.counters["syncs"] == 1


@pytest.mark.trio
async def test_without_the_hub_the_searches_start_after_the_grace(autojump_clock: object) -> None:
    async with running(accounts=(7001,), fills_lookback=600.0) as rig:
        await anyio.sleep(40)
    assert [round(at, 3) for at, _, _ in rig.gateway.calls] == [30.0] * 5
    assert rig.gateway.calls[3][2]["startTimestamp"] == "2025-11-24T15:50:30+00:00"
    assert rig.ctx.told("connection_user") == []  # the configured accounts are subscribed


@pytest.mark.trio
async def test_configured_accounts_are_the_only_ones_listed(autojump_clock: object) -> None:
    # Account/search lists every active account; one not followed has no positions searched,
    # so listing it would show an open P&L of nothing held while it may hold a position.
    other = {**ACCOUNT, "id": 7002, "name": "OTHER"}
    gateway = Gateway(defaults={**DEFAULTS, PATHS[0]: ok("accounts", [ACCOUNT, other])})
    async with running(gateway, accounts=(7002,)) as rig:
        await anyio.sleep(40)
        # The hub tells every account's balance (SubscribeAccounts takes no id), and a
        # position event of another account is not ours to keep either.
        hub = [("GatewayUserAccount", ACCOUNT), ("GatewayUserPosition", position(2))]
        assert [rig.actor.on_user_event(target, args(body)) for target, body in hub] == [None] * 2
    state = rig.actor.state()
    assert [a.id for a in state.accounts] == [7002] and state.positions == ()
    assert [body for _, path, body in rig.gateway.calls if path == PATHS[1]] == [
        {"accountId": 7002}
    ]
    assert rig.actor.counters["unfollowed"] == 2


@pytest.mark.trio
async def test_hub_events_during_a_sync_win_and_fills_count_once(autojump_clock: object) -> None:
    gateway = Gateway(script={PATHS[1]: [slow(2, ok("positions", [position(2)]))]})
    async with running(gateway) as rig:
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(1)  # Position/searchOpen is under way
        for target, payload in [("GatewayUserPosition", position(0)),
                                ("GatewayUserTrade", trade(8002))]:  # fmt: skip
            rig.inbox.send_nowait(HubMessageReceived("user", target, args(payload), START))
        await anyio.sleep(5)
    state = rig.actor.state()
    assert state.positions == ()  # closed by the hub after the answer was made
    assert [f.id for f in state.fills] == [8001, 8002] and state.fills_seen == 2


@pytest.mark.trio
async def test_a_reconnect_resyncs_and_drops_what_ended_meanwhile(autojump_clock: object) -> None:
    async with running() as rig:
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(1)
        rig.gateway.defaults.update({PATHS[1]: ok("positions", []), PATHS[2]: ok("orders", [])})
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(1)
    assert rig.gateway.paths() == [*PATHS, CONTRACT, *PATHS]  # MNQ is priced once
    state = rig.actor.state()
    assert state.positions == () and state.orders == () and len(state.fills) == 2
    *_, closed, synced = rig.ctx.told("topic.account")
    assert isinstance(closed, PositionChanged) and closed.position.size == 0
    assert synced == AccountSynced(7001, orders_gone=(9002,))


@pytest.mark.trio
async def test_an_item_of_the_wrong_shape_is_skipped_and_removes_nothing(
    autojump_clock: object,
) -> None:
    async with running() as rig:
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(1)
        rig.gateway.defaults[PATHS[1]] = ok("positions", [{"id": "x"}])
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(1)
    assert [p.size for p in rig.actor.state().positions] == [2]  # kept: the answer is partial
    assert rig.actor.counters["items_rejected"] == 1 and rig.actor.counters["syncs"] == 2


REFUSED = {"success": False, "errorCode": 1, "errorMessage": None, "positions": None}
BAD_ANSWERS = {
    "500": (reply(500), "transient", "gave up after 4 attempts: POST /api/Position/searchOpen"),
    "not json": (reply(200, b"<html>"), "malformed", "Position/searchOpen: answer is not JSON"),
    "wrong shape": (reply(200, b'{"positions": 5}'), "malformed", "Position/searchOpen: Expected"),
    "null array": (ok("positions", None), "malformed", "Position/searchOpen: positions is null"),
    "refused": (reply(200, REFUSED), "rejected",
                "Position/searchOpen refused: errorCode 1 (AccountNotFound)"),
    "http 400": (reply(400), "rejected", "HTTP 400"),
}  # fmt: skip


@pytest.mark.trio
@pytest.mark.parametrize("case", BAD_ANSWERS)
async def test_a_bad_answer_is_counted_and_the_sync_tried_again(
    autojump_clock: object, case: str
) -> None:
    bad, kind, why = BAD_ANSWERS[case]
    times = 4 if case == "500" else 1  # a 500 is first retried within the request (4 attempts)
    gateway = Gateway(script={PATHS[1]: [bad] * times})
    async with running(gateway) as rig:
        rig.inbox.send_nowait(Connected("user"))
        await until(lambda: rig.actor.counters["sync_failures"] > 0)
        failed = rig.actor.state()
        await anyio.sleep(10)
    assert failed.sync_error is not None and failed.sync_error.startswith(why)
    assert failed.positions == () and [a.id for a in failed.accounts] == [7001]
    counters = rig.actor.counters
    assert counters[f"failures_{kind}"] == 1 and counters["sync_failures"] == 1
    state = rig.actor.state()
    assert [p.size for p in state.positions] == [2] and state.sync_error is None
    assert counters["syncs"] == 1


@pytest.mark.trio
async def test_429_is_waited_out_not_failed(autojump_clock: object) -> None:
    gateway = Gateway(script={PATHS[0]: [reply(429, headers={"retry-after": "3"})] * 2})
    async with running(gateway) as rig:
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(10)
    assert [round(at) for at, path, _ in gateway.calls if path == PATHS[0]] == [0, 3, 6]
    assert rig.actor.counters["sync_failures"] == 0 and rig.actor.counters["syncs"] == 1


@pytest.mark.trio
async def test_failed_syncs_back_off_doubling_and_a_reconnect_cuts_the_wait(
    autojump_clock: object,
) -> None:
    gateway = Gateway(defaults={**DEFAULTS, PATHS[0]: reply(200, b"nope")})
    async with running(gateway) as rig:
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(40)
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(0.5)
    assert [at for at, _, _ in gateway.calls] == [0, 5, 15, 35, 40]  # 5, 10, 20 s; then at once
    assert rig.actor.counters["failures_malformed"] == 5


@pytest.mark.trio
async def test_an_expired_token_asks_auth_for_a_fresh_one(autojump_clock: object) -> None:
    gateway = Gateway(
        defaults={path: only_for("tok-SECRET-2", answer) for path, answer in DEFAULTS.items()}
    )
    async with running(gateway) as rig:
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(1)
    assert auth_of(rig).of(RefreshToken) == [RefreshToken()]
    assert rig.actor.counters["syncs"] == 1 and rig.actor.counters["requests"] == 6


@pytest.mark.trio
async def test_a_token_refused_twice_or_no_token_is_a_counted_failure(
    autojump_clock: object,
) -> None:
    gateway = Gateway(defaults={**DEFAULTS, PATHS[0]: reply(401)})
    async with running(gateway) as rig:
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(1)
        auth_of(rig).reply = AuthFailureReported("login refused")
        await anyio.sleep(5)
    assert rig.actor.counters["failures_unauthorized"] == 1
    assert rig.actor.counters["failures_auth"] == 1
    assert rig.actor.state().sync_error == "no token: login refused"
    assert "tok-SECRET" not in repr(rig.actor.state())


BARE_MNQ = {k: v for k, v in MNQ_CONTRACT.items() if k != "symbolId"}  # as the docs show it


@pytest.mark.trio
@pytest.mark.parametrize(
    "answer",
    [
        ok("contract", BARE_MNQ),
        ok("contracts", [BARE_MNQ]),  # the shape of the gateway's own docs
        ok("contracts", [{**BARE_MNQ, "id": "CON.F.US.EP.Z25", "tickValue": 12.5}, BARE_MNQ]),
    ],
    ids=["contract", "contracts", "contracts-another-first"],
)
async def test_contract_search_by_id_is_read_in_either_shape_without_a_symbol_id(
    autojump_clock: object, answer: Answer
) -> None:
    gateway = Gateway(script={CONTRACT: [answer]})
    async with running(gateway) as rig:
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(1)
    assert rig.actor.state().point_values == {MNQ: 2.0}
    assert rig.actor.counters["contracts_unpriced"] == 0


@pytest.mark.trio
@pytest.mark.parametrize(
    "unpriced",
    [None, {**MNQ_CONTRACT, "tickValue": -0.5}, {**MNQ_CONTRACT, "tickValue": 0.0}],
    ids=["no-contract", "negative-tick-value", "zero-tick-value"],  # a sign flip of every P&L
)
async def test_a_new_contract_from_the_hub_is_priced_and_a_failed_lookup_waits(
    autojump_clock: object, unpriced: dict[str, Any] | None
) -> None:
    es = {**MNQ_CONTRACT, "id": "CON.F.US.EP.Z25", "tickSize": 0.25, "tickValue": 12.5}
    gateway = Gateway(script={CONTRACT: [ok("contract", unpriced)]})  # MNQ: no price at first
    async with running(gateway) as rig:
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(1)
        assert rig.actor.state().point_values == {}
        assert rig.actor.counters["contracts_unpriced"] == 1
        assert (
            rig.actor.counters["failures_malformed"] == 1 and rig.actor.state().sync_error is None
        )
        rig.gateway.defaults[CONTRACT] = ok("contract", es)
        es_position = {**position(1), "contractId": es["id"]}
        rig.inbox.send_nowait(
            HubMessageReceived("user", "GatewayUserPosition", args(es_position), START)
        )
        await anyio.sleep(1)
        assert rig.actor.state().point_values == {es["id"]: 50.0}  # MNQ waits for the next sync
        rig.gateway.defaults[CONTRACT] = ok("contract", MNQ_CONTRACT)
        rig.inbox.send_nowait(Connected("user"))
        await anyio.sleep(1)
    assert rig.actor.state().point_values == {es["id"]: 50.0, MNQ: 2.0}
    assert rig.gateway.paths().count(CONTRACT) == 3
