"""REST through httpx.MockTransport: the sans-IO handler, no socket."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import httpx
import msgspec
import pytest

from protocols import gateway as gw
from protocols.errors import ConfigError
from protocols.rest import RateLimit, RestLimits
from pxnode.sim import GatewaySim, SimConfig, mock_transport
from pxnode.sim.market import iso

START = 1_764_000_000.0
MNQ = "CON.F.US.MNQ.Z25"
T = TypeVar("T")


def listed(items: list[T] | None) -> list[T]:
    """A response's list, which the gateway's schema allows to be null."""
    assert items is not None
    return items


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gateway(clock: Clock) -> GatewaySim:
    return GatewaySim(SimConfig(rate=50, token_ttl=3600), wall_time=clock)


@pytest.fixture
def http(gateway: GatewaySim) -> Iterator[httpx.Client]:
    with httpx.Client(transport=mock_transport(gateway.rest), base_url="http://sim") as client:
        yield client


def login(http: httpx.Client, user: str = "demo", key: str = "demo-api-key") -> str:
    answer = http.post("/api/Auth/loginKey", json={"userName": user, "apiKey": key})
    assert answer.status_code == 200
    token = msgspec.json.decode(answer.content, type=gw.LoginResponse).token
    assert token is not None
    return token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_login_validate_logout(http: httpx.Client) -> None:
    token = login(http)
    answer = http.post("/api/Auth/validate", json={}, headers=auth(token))
    fresh = msgspec.json.decode(answer.content, type=gw.ValidateResponse)
    assert fresh.success and fresh.new_token and fresh.new_token != token
    out = http.post("/api/Auth/logout", json={}, headers=auth(token))
    assert msgspec.json.decode(out.content, type=gw.LogoutResponse).success
    assert http.post("/api/Auth/validate", json={}, headers=auth(token)).status_code == 401
    assert (
        http.post("/api/Auth/validate", json={}, headers=auth(fresh.new_token)).status_code == 200
    )


def test_wrong_key_is_http_200_with_success_false(http: httpx.Client) -> None:
    for user, key in (("demo", "nope"), ("nobody", "demo-api-key")):
        answer = http.post("/api/Auth/loginKey", json={"userName": user, "apiKey": key})
        body = msgspec.json.decode(answer.content, type=gw.LoginResponse)
        assert answer.status_code == 200 and not body.success and body.error_code != 0
        assert body.token is None and key not in answer.text
        assert body.error_code == 3 and body.error_message is None  # InvalidCredentials


def test_tokens_expire_with_the_clock(http: httpx.Client, clock: Clock) -> None:
    token = login(http)
    clock.now += 3600
    answer = http.post("/api/Account/search", json={}, headers=auth(token))
    assert answer.status_code == 401 and "expired" in answer.headers["www-authenticate"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer x.y.z"},
    ],
)
def test_authed_endpoints_need_a_good_bearer(http: httpx.Client, headers: dict[str, str]) -> None:
    for path in ("Account/search", "Contract/available", "History/retrieveBars", "Auth/validate"):
        answer = http.post(f"/api/{path}", json={}, headers=headers)
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")


def test_accounts(http: httpx.Client) -> None:
    token = login(http)
    active = http.post(
        "/api/Account/search", json={"onlyActiveAccounts": True}, headers=auth(token)
    )
    accounts = listed(msgspec.json.decode(active.content, type=gw.AccountSearchResponse).accounts)
    assert [a.id for a in accounts] == [7001] and accounts[0].can_trade and accounts[0].simulated
    every = http.post(
        "/api/Account/search", json={"onlyActiveAccounts": False}, headers=auth(token)
    )
    assert (
        len(listed(msgspec.json.decode(every.content, type=gw.AccountSearchResponse).accounts)) == 2
    )


def test_contracts(http: httpx.Client) -> None:
    token = login(http)
    found = http.post(
        "/api/Contract/search", json={"searchText": "NQ", "live": False}, headers=auth(token)
    )
    ids = [
        c.id
        for c in listed(
            msgspec.json.decode(found.content, type=gw.ContractSearchResponse).contracts
        )
    ]
    assert ids == ["CON.F.US.MNQ.Z25", "CON.F.US.ENQ.Z25"]
    gold = http.post(
        "/api/Contract/searchById", json={"contractId": "CON.F.US.GCE.G26"}, headers=auth(token)
    )
    contract = msgspec.json.decode(gold.content, type=gw.ContractSearchByIdResponse).contract
    assert contract is not None and (contract.tick_size, contract.tick_value) == (0.1, 10.0)
    assert contract.symbol_id == "F.US.GCE" and contract.active_contract
    missing = http.post("/api/Contract/searchById", json={"contractId": "X"}, headers=auth(token))
    assert not msgspec.json.decode(missing.content, type=gw.ContractSearchByIdResponse).success
    every = http.post("/api/Contract/available", json={"live": False}, headers=auth(token))
    assert (
        len(listed(msgspec.json.decode(every.content, type=gw.ContractSearchResponse).contracts))
        == 4
    )


def test_retrieve_bars(http: httpx.Client, gateway: GatewaySim, clock: Clock) -> None:
    token = login(http)
    clock.now = START + 300
    gateway.sim.advance(clock.now)
    body = {
        "contractId": MNQ, "live": False, "startTime": iso(int((START - 600) * 1e6)),
        "endTime": iso(int(clock.now * 1e6)), "unit": 2, "unitNumber": 1, "limit": 5,
        "includePartialBar": False,
    }  # fmt: skip
    answer = http.post("/api/History/retrieveBars", json=body, headers=auth(token))
    bars = listed(msgspec.json.decode(answer.content, type=gw.RetrieveBarsResponse).bars)
    assert len(bars) == 5 and bars[0].t > bars[-1].t  # newest first
    truth = gateway.sim.recent_trades(MNQ, since=START + 240, until=START + 300)
    assert bars[0].v == sum(t.volume for t in truth)


def test_orders_positions_trades(http: httpx.Client) -> None:
    token = login(http)
    h = auth(token)
    open_orders = http.post("/api/Order/searchOpen", json={"accountId": 7001}, headers=h)
    orders = listed(msgspec.json.decode(open_orders.content, type=gw.OrderSearchResponse).orders)
    assert [o.status for o in orders] == [1]
    window = {"accountId": 7001, "startTimestamp": iso(int((START - 7200) * 1e6))}
    every = msgspec.json.decode(
        http.post("/api/Order/search", json=window, headers=h).content, type=gw.OrderSearchResponse
    )
    assert len(listed(every.orders)) == 2
    later = {"accountId": 7001, "startTimestamp": iso(int((START - 60) * 1e6))}
    assert (
        msgspec.json.decode(
            http.post("/api/Order/search", json=later, headers=h).content,
            type=gw.OrderSearchResponse,
        ).orders
        == []
    )
    positions = http.post("/api/Position/searchOpen", json={"accountId": 7001}, headers=h)
    assert (
        listed(msgspec.json.decode(positions.content, type=gw.PositionSearchResponse).positions)[
            0
        ].size
        == 2
    )
    trades = http.post("/api/Trade/search", json=window, headers=h)
    assert len(listed(msgspec.json.decode(trades.content, type=gw.TradeSearchResponse).trades)) == 1
    stranger = http.post("/api/Position/searchOpen", json={"accountId": 1}, headers=h)
    assert (
        listed(msgspec.json.decode(stranger.content, type=gw.PositionSearchResponse).positions)
        == []
    )
    bad = http.post(
        "/api/Trade/search", json={"accountId": 7001, "startTimestamp": "soon"}, headers=h
    )
    assert not msgspec.json.decode(bad.content, type=gw.TradeSearchResponse).success


def test_order_and_trade_search_need_a_start_timestamp(http: httpx.Client) -> None:
    h = auth(login(http))
    for path in ("/api/Order/search", "/api/Trade/search"):
        assert http.post(path, json={"accountId": 7001}, headers=h).status_code == 400


def test_the_rate_limits_answer_429_without_retry_after(clock: Clock) -> None:
    limits = RestLimits(history=RateLimit(3, 30.0), other=RateLimit(2, 60.0))
    sim = GatewaySim(SimConfig(rate=50, rest_limits=limits), wall_time=clock)
    with httpx.Client(transport=mock_transport(sim.rest), base_url="http://sim") as http:
        h = auth(login(http))
        body = {"contractId": "CON.F.US.MNQ.Z25", "live": False, "startTime": iso(0),
                "endTime": iso(int(START * 1e6)), "unit": 2, "unitNumber": 1, "limit": 10,
                "includePartialBar": False}  # fmt: skip
        codes = [http.post("/api/History/retrieveBars", json=body, headers=h) for _ in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        assert "retry-after" not in codes[-1].headers
        search = {"searchText": "MNQ", "live": False}
        assert http.post("/api/Contract/search", json=search, headers=h).status_code == 200
        assert http.post("/api/Contract/search", json=search, headers=h).status_code == 429
        clock.now += 30  # the history window slid by; the other one has not
        assert http.post("/api/History/retrieveBars", json=body, headers=h).status_code == 200
        assert http.post("/api/Contract/search", json=search, headers=h).status_code == 429
        assert sim.rest.throttled == 3


def test_ping_needs_no_auth(http: httpx.Client) -> None:
    answer = http.get("/api/Status/ping")
    assert answer.status_code == 200 and answer.text == "pong"
    assert answer.headers["content-type"].startswith("text/plain")
    assert http.post("/api/Status/ping").status_code == 405


@pytest.mark.parametrize(
    ("accept", "body"),
    [
        ("application/json", b'"pong"'),  # project-x-py's client default; it parses JSON
        ("text/plain", b"pong"),
        ("*/*", b"pong"),
        ("application/json, */*", b"pong"),  # */* anywhere: the header is ignored
        ("application/json;q=0.5, text/plain", b"pong"),
        ("text/plain;q=0.1, application/json", b'"pong"'),
        ("text/json", b'"pong"'),
        ("application/problem+json", b'"pong"'),
        ("application/json;q=0", b"pong"),
        ("application/json;q=nan", b"pong"),
        ("application/json;q=high", b"pong"),
        ("application/json;q=7", b"pong"),
        ("image/png", b"pong"),
        (";;,,", b"pong"),
    ],
)
def test_ping_negotiates_like_aspnet(http: httpx.Client, accept: str, body: bytes) -> None:
    answer = http.get("/api/Status/ping", headers={"Accept": accept})
    assert answer.status_code == 200 and answer.content == body
    kind = "application/json" if body.startswith(b'"') else "text/plain"
    assert answer.headers["content-type"].startswith(kind)


def test_the_bodies_project_x_py_sends(http: httpx.Client) -> None:
    """The exact requests of project-x-py 4.4 (client/auth.py, client/market_data.py)."""
    sdk = {"Accept": "application/json", "Content-Type": "application/json"}
    answer = http.post("/api/Auth/loginKey", json={"userName": "demo", "apiKey": "demo-api-key"})
    token = answer.json()["token"]
    sdk["Authorization"] = f"Bearer {token}"
    accounts = http.post("/api/Account/search", json={"onlyActiveAccounts": True}, headers=sdk)
    assert accounts.json()["success"] and accounts.json()["accounts"][0]["id"] == 7001
    found = http.post(
        "/api/Contract/search", json={"searchText": "MNQ", "live": False}, headers=sdk
    )
    assert [c["id"] for c in found.json()["contracts"]] == [MNQ]
    by_id = http.post("/api/Contract/searchById", json={"contractId": MNQ}, headers=sdk)
    assert by_id.json()["contract"]["symbolId"] == "F.US.MNQ"
    available = http.post("/api/Contract/available", json={"live": False}, headers=sdk)
    assert len(available.json()["contracts"]) == 4
    bars = http.post(
        "/api/History/retrieveBars",
        json={
            "contractId": MNQ,
            "live": False,
            "startTime": "2025-11-23T16:00:00.123456+00:00",  # datetime.isoformat() in UTC
            "endTime": "2025-11-24T16:00:00+00:00",
            "unit": 2,
            "unitNumber": 1,
            "limit": 20_000,
            "includePartialBar": True,
        },
        headers=sdk,
    )
    times = [bar["t"] for bar in bars.json()["bars"]]
    assert len(times) == 1439 and times[0] == "2025-11-24T15:59:00+00:00"  # newest first
    assert http.post("/api/Auth/validate", headers=sdk).json()["newToken"]
    assert http.get("/api/Status/ping", headers=sdk).json() == "pong"
    assert http.post("/api/Auth/logout", headers=sdk).json()["success"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"userName": 5, "apiKey": "k"}',
        b'{"userName": "demo"}',
        b"\xff" * 10,
    ],
)
def test_bad_bodies_are_400(http: httpx.Client, body: bytes) -> None:
    answer = http.post("/api/Auth/loginKey", content=body)
    assert answer.status_code == 400
    assert not msgspec.json.decode(answer.content, type=gw.RestResponse).success


def test_bad_types_on_authed_endpoints_are_400(http: httpx.Client) -> None:
    token = login(http)
    for path, body in (
        ("History/retrieveBars", {"contractId": MNQ, "unit": "minute"}),
        ("Order/searchOpen", {"accountId": "7001"}),
        ("Order/searchOpen", {"accountId": float("nan")}),
        ("Account/search", {"onlyActiveAccounts": "yes"}),
    ):
        answer = http.post(f"/api/{path}", content=msgspec.json.encode(body), headers=auth(token))
        assert answer.status_code == 400, path


def test_unknown_paths_and_methods(http: httpx.Client) -> None:
    assert http.post("/api/Nothing/here", json={}).status_code == 404
    assert http.get("/api/Account/search").status_code == 405
    assert http.post("/elsewhere", json={}).status_code == 404
    too_big = http.post("/api/Auth/loginKey", content=b" " * ((1 << 20) + 1))
    assert too_big.status_code == 413


def test_rest_faults(http: httpx.Client, gateway: GatewaySim) -> None:
    gateway.rest.pending_429 = 2
    gateway.rest.pending_500 = 1
    first = http.post("/api/Auth/loginKey", json={"userName": "demo", "apiKey": "demo-api-key"})
    assert first.status_code == 429 and first.headers["retry-after"] == "1"
    assert http.get("/api/Status/ping").status_code == 429
    assert http.get("/api/Status/ping").status_code == 500
    assert http.get("/api/Status/ping").status_code == 200


def test_negotiate(http: httpx.Client, gateway: GatewaySim) -> None:
    token = login(http)
    v1 = http.post("/hubs/market/negotiate?negotiateVersion=1", headers=auth(token)).json()
    assert v1["negotiateVersion"] == 1 and v1["connectionToken"] != v1["connectionId"]
    assert v1["availableTransports"] == [
        {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}
    ]
    assert (
        gateway.rest.hub_of(v1["connectionId"])
        == gateway.rest.hub_of(v1["connectionToken"])
        == "market"
    )
    v0 = http.post(f"/hubs/user/negotiate?access_token={token}").json()
    assert v0["negotiateVersion"] == 0 and "connectionToken" not in v0
    assert gateway.rest.hub_of(v0["connectionId"]) == "user"
    assert http.post("/hubs/market/negotiate").status_code == 401
    assert http.post("/hubs/market/negotiate?access_token=bad").status_code == 401
    assert (
        http.post("/hubs/market/negotiate?negotiateVersion=9", headers=auth(token)).status_code
        == 400
    )
    assert http.post("/hubs/other/negotiate", headers=auth(token)).status_code == 404
    assert http.get("/hubs/market/negotiate", headers=auth(token)).status_code == 405


def test_config_is_checked_and_hides_credentials() -> None:
    config = SimConfig(credentials={"alice": "s3cret-key"})
    assert "s3cret" not in repr(config) and "s3cret" not in str(config)
    assert "seed=1" in repr(config)
    bad: dict[str, Any]
    for bad in (
        {"rate": 0.0},
        {"rate": float("nan")},
        {"port": 70000},
        {"contracts": ()},
        {"contracts": ("CON.F.US.NOPE",)},
        {"ping_interval": -1.0},
        {"token_ttl": float("inf")},
        {"max_message_size": 10},
        {"credentials": {}},
    ):
        with pytest.raises(ConfigError):
            SimConfig(**bad)
