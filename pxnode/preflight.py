"""Checks before a live node starts, so a mistake is one clear line, not a retry loop.

* The gateway must be reachable (GET /api/Status/ping, no auth): an unreachable
  URL is a typo far more often than an outage.
* Contract names: ids pass through, symbols are looked up. ``MNQ`` or ``MNQZ5``
  becomes ``CON.F.US.MNQ.Z25`` through POST /api/Contract/search, preferring the
  active contract, so the node's config only ever holds contract ids.
"""

from __future__ import annotations

import httpx

from actors.auth import AuthConfig
from protocols.errors import ConfigError, GatewayError
from protocols.gateway import (
    ENCODER,
    ContractSearchRequest,
    ContractSearchResponse,
    LoginKeyRequest,
    LoginResponse,
    decoder,
)

CONTRACT_ID_PREFIX = "CON."

_LOGIN = decoder(LoginResponse)
_SEARCH = decoder(ContractSearchResponse)


async def check_reachable(
    api_url: str, *, transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0
) -> None:
    """``GatewayError`` if nothing answers at ``api_url`` (any HTTP answer will do)."""
    async with httpx.AsyncClient(base_url=api_url, transport=transport, timeout=timeout) as client:
        try:
            await client.get("/api/Status/ping")
        except httpx.HTTPError as error:
            where = f"{api_url}: {type(error).__name__}"
            raise GatewayError(f"gateway unreachable at {where}") from None


async def resolve_contracts(
    names: list[str], auth: AuthConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> list[str]:
    """Contract ids for ``names`` (ids unchanged); ``ConfigError`` for an unknown symbol."""
    symbols = [name for name in names if not name.startswith(CONTRACT_ID_PREFIX)]
    if not symbols:
        return list(names)
    resolved: dict[str, str] = {}
    async with httpx.AsyncClient(
        base_url=auth.api_url, transport=transport, timeout=auth.request_timeout
    ) as client:
        login = LoginKeyRequest(user_name=auth.username, api_key=auth.api_key.reveal())
        answer = await _post(client, "/api/Auth/loginKey", ENCODER.encode(login), None)
        token = _LOGIN.decode(answer).token
        if not token:
            raise ConfigError("cannot look up contract symbols: the gateway refused the login")
        for symbol in symbols:
            request = ENCODER.encode(ContractSearchRequest(search_text=symbol, live=False))
            found = _SEARCH.decode(await _post(client, "/api/Contract/search", request, token))
            resolved[symbol] = _pick(symbol, found)
    return [resolved.get(name, name) for name in names]


def _pick(symbol: str, found: ContractSearchResponse) -> str:
    wanted = symbol.upper()
    candidates = [
        c
        for c in found.contracts
        if wanted in (c.name.upper(), c.symbol_id.upper(), c.symbol_id.upper().rsplit(".", 1)[-1])
        or c.name.upper().startswith(wanted)
    ]
    candidates.sort(key=lambda c: not c.active_contract)
    if not candidates:
        raise ConfigError(f"unknown contract {symbol!r} (no match in Contract/search)")
    return candidates[0].id


async def _post(client: httpx.AsyncClient, path: str, body: bytes, token: str | None) -> bytes:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = await client.post(path, content=body, headers=headers)
    except httpx.HTTPError as error:
        raise GatewayError(
            f"gateway unreachable at {client.base_url}: {type(error).__name__}"
        ) from None
    if response.status_code != 200:
        raise GatewayError(
            f"{path} answered HTTP {response.status_code}", status=response.status_code
        )
    return response.content
