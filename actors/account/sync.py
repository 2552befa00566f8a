"""The REST searches of the account actor: what is, where the user hub only says what changed.

The real gateway sends nothing when the user hub subscribes, so without these a
node would know an account only from its next change. Each search is one
logical request through ``rest.TokenCaller`` (the node's token and budget,
retries, one fresh token after a 401); every failure ends as ``rest.Failed``.

An answer is judged item by item: an item of the wrong shape is counted
(``items_rejected``) and skipped, and the answer is then not *complete*, so the
book removes nothing it does not list. A ``null`` array in a successful answer
is not read as "none": it fails as ``malformed`` (the gateway sends null arrays
with failures), and the sync is tried again.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from protocols import gateway as gw
from protocols import rest
from protocols.account import (
    AccountInfo,
    Fill,
    OpenPosition,
    WorkingOrder,
    account_info,
    fill,
    open_position,
    working_order,
)
from protocols.interfaces import Ref
from protocols.timeframes import BarClock, parse_timeframe

from .config import AccountConfig

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("pxnode.account")

ACCOUNTS: Final = "/api/Account/search"
POSITIONS: Final = "/api/Position/searchOpen"
ORDERS: Final = "/api/Order/searchOpen"
TRADES: Final = "/api/Trade/search"
CONTRACT: Final = "/api/Contract/searchById"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TRADING_DAY: Final = BarClock(parse_timeframe("1day"))

T = TypeVar("T")


class _Answer(gw.RestResponse, frozen=True):
    """Any of the four answers, its items left raw to be judged one by one."""

    accounts: list[msgspec.Raw] | None = None
    positions: list[msgspec.Raw] | None = None
    orders: list[msgspec.Raw] | None = None
    trades: list[msgspec.Raw] | None = None


def fills_since(now_us: int, lookback: float | None) -> int:
    """Where Trade/search starts: ``lookback`` seconds ago, else the trading day's open."""
    if lookback is None:
        return _TRADING_DAY.start_of(now_us)
    return now_us - round(lookback * 1_000_000)


def iso(ts_us: int) -> str:
    return (_EPOCH + timedelta(microseconds=ts_us)).isoformat()


class Searches:
    """The four searches, counting into the actor's ``counters``."""

    def __init__(
        self,
        config: AccountConfig,
        counters: MutableMapping[str, int],
        rng: random.Random,
        budget: rest.RestBudget | None,
    ) -> None:
        self.counters = counters
        self._lookback = config.fills_lookback
        self._caller = rest.TokenCaller(
            msgspec.convert(config, rest.RetryPolicy, from_attributes=True),
            rng,
            budget,
            token_timeout=config.token_timeout,
            counters=counters,
            log=logger,
        )

    def __repr__(self) -> str:
        return f"<Searches {self._caller!r}>"

    async def accounts(
        self, client: httpx.AsyncClient, auth: Ref[Any]
    ) -> tuple[list[AccountInfo], bool]:
        request = gw.AccountSearchRequest(only_active_accounts=True)
        found, complete = await self._search(
            client, auth, ACCOUNTS, request, "accounts", gw.Account
        )
        return [account_info(a) for a in found], complete

    async def positions(
        self, client: httpx.AsyncClient, auth: Ref[Any], account_id: int
    ) -> tuple[list[OpenPosition], bool]:
        request = gw.PositionSearchRequest(account_id=account_id)
        found, complete = await self._search(
            client, auth, POSITIONS, request, "positions", gw.Position
        )
        return [open_position(p) for p in found], complete

    async def orders(
        self, client: httpx.AsyncClient, auth: Ref[Any], account_id: int
    ) -> tuple[list[WorkingOrder], bool]:
        request = gw.OpenOrderSearchRequest(account_id=account_id)
        found, complete = await self._search(client, auth, ORDERS, request, "orders", gw.Order)
        return [working_order(o) for o in found], complete

    async def fills(
        self, client: httpx.AsyncClient, auth: Ref[Any], account_id: int, now_us: int
    ) -> list[Fill]:
        start = iso(fills_since(now_us, self._lookback))
        request = gw.TradeSearchRequest(account_id=account_id, start_timestamp=start)
        found, _ = await self._search(client, auth, TRADES, request, "trades", gw.TradeRecord)
        return [fill(t) for t in found]

    async def point_value(self, client: httpx.AsyncClient, auth: Ref[Any], contract: str) -> float:
        """Money per 1.0 of ``contract``'s price: its tickValue / tickSize."""
        request = gw.ContractSearchByIdRequest(contract_id=contract)
        content = await self._caller.post(client, auth, CONTRACT, gw.ENCODER.encode(request))
        found = self._caller.decode(gw.ContractSearchByIdResponse, CONTRACT, content).find(contract)
        size = found.tick_size if found is not None else math.nan
        value = found.tick_value / size if found is not None and size > 0 else math.nan
        if not (math.isfinite(value) and value > 0):  # a sign flip of every P&L otherwise
            raise rest.Failed(
                "malformed", f"Contract/searchById: no tick value of {contract[:60]!r}"
            )
        return value

    async def _search(
        self,
        client: httpx.AsyncClient,
        auth: Ref[Any],
        path: str,
        request: gw.RestRequest,
        field: str,
        kind: type[T],
    ) -> tuple[list[T], bool]:
        content = await self._caller.post(client, auth, path, gw.ENCODER.encode(request))
        items = getattr(self._caller.decode(_Answer, path, content), field)
        if items is None:
            raise rest.Failed("malformed", f"{path.removeprefix('/api/')}: {field} is null")
        found: list[T] = []
        complete = True
        for item in items:
            try:
                found.append(gw.decoder(kind).decode(item))
            except msgspec.DecodeError:  # ValidationError is one
                self.counters["items_rejected"] += 1
                complete = False
        return found, complete
