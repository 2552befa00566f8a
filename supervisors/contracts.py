"""Contract symbols to contract ids, through POST /api/Contract/search.

``MNQ`` or ``MNQZ5`` becomes ``CON.F.US.MNQ.Z25`` (the active contract first), so
a node only ever holds contract ids; ids pass through untouched. ``open_node``
does this before anything starts, for the CLI and an embedding application
alike: an unknown symbol is one clear ``ConfigError``, never a node with no data.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, TypeVar

import msgspec

from actors.auth import AuthConfig
from protocols.errors import ConfigError, GatewayError
from protocols.gateway import (
    ENCODER,
    Contract,
    ContractSearchRequest,
    ContractSearchResponse,
    LoginKeyRequest,
    LoginResponse,
    RestResponse,
    decoder,
    describe_error,
)
from protocols.rest import RestBudget, RetryPolicy, Transient, post_json, with_retries
from protocols.secrets import Secret, redact_userinfo

if TYPE_CHECKING:
    import httpx

CONTRACT_ID_PREFIX = "CON."
_MONTH_CODES = frozenset("FGHJKMNQUVXZ")
"""The futures month codes, January (F) to December (Z)."""
_LISTED = 8
"""Contracts a failed look-up names at most."""

R = TypeVar("R", bound=RestResponse)

logger = logging.getLogger("pxnode.contracts")

_LOGIN = decoder(LoginResponse)
_SEARCH = decoder(ContractSearchResponse)


def is_contract_id(name: str) -> bool:
    return name.startswith(CONTRACT_ID_PREFIX)


async def resolve_contracts(
    names: list[str],
    auth: AuthConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    budget: RestBudget | None = None,
) -> list[str]:
    """Contract ids for ``names`` (ids unchanged); ``ConfigError`` for an unknown symbol."""
    import httpx

    symbols = [name for name in names if not is_contract_id(name)]
    if not symbols:
        return list(names)
    resolved: dict[str, str] = {}
    policy = msgspec.convert(auth, RetryPolicy, from_attributes=True)
    async with httpx.AsyncClient(
        base_url=auth.api_url, transport=transport, timeout=auth.request_timeout
    ) as client:
        login = LoginKeyRequest(user_name=auth.username, api_key=auth.api_key.reveal())
        path = "/api/Auth/loginKey"
        answer = _decode(
            _LOGIN, path, await _post(client, path, ENCODER.encode(login), None, budget, policy)
        )
        if not answer.success or not answer.token:
            why = describe_error(path, answer) if not answer.success else "no token"
            raise ConfigError(f"cannot look up contract symbols: {why}")
        path = "/api/Contract/search"
        for symbol in symbols:
            request = ENCODER.encode(ContractSearchRequest(search_text=symbol, live=False))
            found = _decode(
                _SEARCH, path, await _post(client, path, request, answer.token, budget, policy)
            )
            if not found.success:
                raise ConfigError(f"cannot look up {symbol!r}: {describe_error(path, found)}")
            resolved[symbol] = _pick(symbol, found)
    return [resolved.get(name, name) for name in names]


def _pick(symbol: str, found: ContractSearchResponse) -> str:
    """The active contract the symbol names exactly (see ``_names``), else the first one.

    The gateway's search matches text anywhere: "NQ" finds E-Mini Natural Gas
    (NQGG25) beside the Nasdaq E-mini (ENQH25), so a prefix is no match. With no
    exact match the ``ConfigError`` lists what the search found, to choose from.
    """
    wanted = symbol.upper()
    contracts = found.contracts or []
    candidates = sorted(
        (c for c in contracts if _names(wanted, c)), key=lambda c: not c.active_contract
    )
    if candidates:
        return candidates[0].id
    listed = ", ".join(f"{c.name} ({c.description[:60]})" for c in contracts[:_LISTED])
    hint = f"; Contract/search found {listed}: give one of these names" if listed else ""
    raise ConfigError(f"unknown contract {symbol!r} (no exact match in Contract/search){hint}")


def _names(wanted: str, contract: Contract) -> bool:
    """``wanted`` is the contract's name (MNQZ5), symbol id (F.US.MNQ) or root (MNQ):
    the root is the symbol id's last part, or what precedes the name's month code and
    year (an answer may carry no symbol id)."""
    name, symbol = contract.name.upper(), contract.symbol_id.upper()
    if wanted in (name, symbol) or (symbol and wanted == symbol.rsplit(".", 1)[-1]):
        return True
    expiry = name.removeprefix(wanted)
    return (
        expiry != name
        and 2 <= len(expiry) <= 3
        and expiry[0] in _MONTH_CODES
        and expiry[1:].isdigit()
    )


def _decode(kind: msgspec.json.Decoder[R], path: str, content: bytes) -> R:
    try:
        return kind.decode(content)
    except msgspec.DecodeError:
        raise GatewayError(f"{path} answered something that is not its JSON") from None


async def _post(
    client: httpx.AsyncClient,
    path: str,
    body: bytes,
    token: str | None,
    budget: RestBudget | None,
    policy: RetryPolicy,
) -> bytes:
    """The answer's body: 429 waited out, 5xx and timeouts retried as every REST call of
    the node is (``rest.with_retries``); ``GatewayError`` once that gives up, or for any
    other status."""
    bearer = None if token is None else Secret(token)

    async def attempt() -> httpx.Response:
        return await post_json(client, path, body, policy, bearer=bearer, budget=budget)

    try:
        response = await with_retries(attempt, policy, random.Random(), log=logger, label=path)
    except Transient as error:
        where = redact_userinfo(str(client.base_url))
        raise GatewayError(f"gateway unreachable at {where}: {error}") from None
    if response.status_code != 200:
        url = redact_userinfo(str(response.request.url))  # the URL as requested, /api and all
        raise GatewayError(
            f"POST {url} answered HTTP {response.status_code}", status=response.status_code
        )
    return response.content
