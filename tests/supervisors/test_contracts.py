"""Contract symbols to ids through Contract/search, on answers shaped like the gateway's own."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing

from actors.auth import AuthConfig
from protocols.errors import ConfigError
from protocols.secrets import Secret
from supervisors.contracts import resolve_contracts

AUTH = AuthConfig(username="u", api_key=Secret("k"), api_url="https://gw.test")
OK = {"success": True, "errorCode": 0, "errorMessage": None}
# The gateway's documented answer to searchText "NQ" (gateway.docs.projectx.com,
# search-contracts): no symbolId, and two contracts whose names merely start with NQ.
NQ_ANSWER = [
    {"id": "CON.F.US.ENQ.H25", "name": "ENQH25", "description": "E-mini NASDAQ-100: March 2025",
     "tickSize": 0.25, "tickValue": 5, "activeContract": True},
    {"id": "CON.F.US.MNQ.H25", "name": "MNQH25",
     "description": "Micro E-mini Nasdaq-100: March 2025", "tickSize": 0.25, "tickValue": 0.5,
     "activeContract": True},
    {"id": "CON.F.US.NQG.G25", "name": "NQGG25", "description": "E-Mini Natural Gas: February 2025",
     "tickSize": 0.005, "tickValue": 12.5, "activeContract": True},
    {"id": "CON.F.US.NQM.G25", "name": "NQMG25", "description": "E-Mini Crude Oil: February 2025",
     "tickSize": 0.025, "tickValue": 12.5, "activeContract": True},
]  # fmt: skip


def gateway(contracts: list[dict[str, Any]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/Auth/loginKey":
            return httpx.Response(200, json={**OK, "token": "t"})
        text = msgspec.json.decode(request.content)["searchText"].upper()
        found = [
            c
            for c in contracts
            if any(
                text in str(c.get(key, "")).upper() for key in ("name", "description", "symbolId")
            )
        ]
        return httpx.Response(200, json={**OK, "contracts": found})

    return httpx.MockTransport(handle)


async def resolve(names: list[str], contracts: list[dict[str, Any]]) -> list[str]:
    return await resolve_contracts(names, AUTH, transport=gateway(contracts))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("symbol", "expected"),
    [
        ("MNQ", "CON.F.US.MNQ.H25"),  # the root before month code and year
        ("mnq", "CON.F.US.MNQ.H25"),
        ("ENQ", "CON.F.US.ENQ.H25"),
        ("MNQH25", "CON.F.US.MNQ.H25"),  # the name itself
        ("NQG", "CON.F.US.NQG.G25"),
        ("CON.F.US.ENQ.H25", "CON.F.US.ENQ.H25"),  # an id is not looked up
    ],
)
async def test_a_symbol_names_a_contract_exactly_without_a_symbol_id(
    symbol: str, expected: str
) -> None:
    assert await resolve([symbol], NQ_ANSWER) == [expected]


@pytest.mark.anyio
async def test_the_symbol_id_or_its_root_names_a_contract_and_the_active_one_wins() -> None:
    expired = {**NQ_ANSWER[1], "id": "CON.F.US.MNQ.Z24", "name": "MNQZ24", "activeContract": False}
    contracts = [
        {**c, "symbolId": "F.US." + str(c["id"]).split(".")[3]} for c in [expired, *NQ_ANSWER]
    ]
    assert await resolve(["F.US.MNQ", "MNQ"], contracts) == ["CON.F.US.MNQ.H25"] * 2


@pytest.mark.anyio
async def test_a_prefix_is_no_match_and_the_error_lists_what_the_search_found() -> None:
    """ "NQ" used to pick E-Mini Natural Gas (NQGG25): its name starts with NQ."""
    with pytest.raises(ConfigError) as caught:
        await resolve(["NQ"], NQ_ANSWER)
    message = str(caught.value)
    assert message.startswith("unknown contract 'NQ' (no exact match in Contract/search)")
    assert "ENQH25 (E-mini NASDAQ-100: March 2025)" in message and "NQGG25" in message


@pytest.mark.anyio
async def test_a_symbol_the_search_does_not_find_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"^unknown contract 'XYZ' \(no exact match[^;]*$"):
        await resolve(["XYZ"], NQ_ANSWER)


@pytest.mark.trio
async def test_a_429_or_a_5xx_during_the_look_up_is_waited_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every REST call of a node waits out a 429 and retries a 5xx; the look-up at start
    failed the node at the first one."""
    answers = iter([429, 503, 200])
    search = gateway(NQ_ANSWER)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/Contract/search":
            status = next(answers)
            if status != 200:
                return httpx.Response(status, headers={"Retry-After": "2"})
        return search.handle_request(request)

    ids = await resolve_contracts(["MNQ"], AUTH, transport=httpx.MockTransport(handle))
    assert ids == ["CON.F.US.MNQ.H25"]
