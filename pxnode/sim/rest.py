"""The REST half of the gateway, sans-IO: a request in, a response out.

``RestHandler.handle(method, target, headers, body) -> (status, headers, body)``
knows nothing of sockets; the server adapts it to h11 and tests drive it through
``mock_transport`` (an ``httpx.MockTransport``). It also answers the SignalR
negotiate POSTs, because negotiate is plain HTTP and shares the bearer rules.

Like the real gateway, a refused login is HTTP 200 with ``success: false``,
the endpoint's own error code and ``errorMessage: null``; only a missing or bad
bearer token is HTTP 401. Bodies that do not decode into the endpoint's request
type (a required field missing, such as ``startTimestamp`` of Order/search and
Trade/search) get HTTP 400. More than the gateway's rate limits allow (50
History/retrieveBars per 30 s, 200 other calls per 60 s, sliding windows) get
HTTP 429 without a Retry-After header, as the gateway does.
"""

from __future__ import annotations

import base64
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qs

import httpx
import msgspec

from protocols import gateway as gw
from protocols.rest import HISTORY_PREFIX, RateLimit, RestLimits
from pxnode.sim.account import DemoAccounts, mark
from pxnode.sim.history import SyntheticHistory, retrieve_bars
from pxnode.sim.market import MarketSim, parse_time
from pxnode.sim.tokens import Claims, Rejection, TokenAuthority

log = logging.getLogger(__name__)

Headers: TypeAlias = Sequence[tuple[bytes, bytes]]
Reply: TypeAlias = tuple[int, list[tuple[bytes, bytes]], bytes]
Handler: TypeAlias = Callable[[Any, Claims | None], gw.RestResponse]

HUBS: Final = ("market", "user")
ERROR_INVALID_CREDENTIALS: Final = 3  # ProjectX LoginErrorCode.InvalidCredentials
ERROR_NOT_FOUND: Final = 1  # ContractNotFound (searchById), AccountNotFound (account searches)
MAX_BODY: Final = 1 << 20
_MAX_NEGOTIATIONS: Final = 1024
_JSON: Final = (b"content-type", b"application/json; charset=utf-8")
_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")


def _error(status: int, message: str) -> Reply:
    body = gw.ENCODER.encode(
        gw.RestResponse(success=False, error_code=status, error_message=message)
    )
    return status, [_JSON], body


def bearer(headers: Headers) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, if there is one."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def accepts_json(headers: Headers) -> bool:
    """Whether ASP.NET Core content negotiation picks JSON for a ``string`` answer.

    The gateway's ping returns a string: text/plain by default, but a JSON string
    (``"pong"``) when the Accept header prefers JSON, which is what SDKs sending
    ``Accept: application/json`` parse. Like ASP.NET Core, ``*/*`` anywhere means
    the header is ignored, ranges are tried by quality, and q=0 (or an unreadable
    q) rules a range out.
    """
    ranges: list[tuple[float, int, str]] = []
    for name, value in headers:
        if name.lower() != b"accept":
            continue
        for part in value.decode("latin-1").split(","):
            media, *params = (piece.strip().lower() for piece in part.split(";"))
            quality = 1.0
            for param in params:
                key, _, number = param.partition("=")
                if key.strip() == "q":
                    try:
                        quality = float(number)
                    except ValueError:
                        quality = 0.0
            if media == "*/*":
                return False
            if 0.0 < quality <= 1.0:  # also false for NaN
                ranges.append((-quality, len(ranges), media))
    for _, _, media in sorted(ranges):
        if media in ("text/plain", "text/*"):
            return False
        if media in ("application/json", "text/json", "application/*") or media.endswith("+json"):
            return True
    return False


def unauthorized(reason: Rejection) -> Reply:
    challenge = f'Bearer error="invalid_token", error_description="token {reason}"'
    if reason == "missing":
        challenge = "Bearer"
    return 401, [(b"www-authenticate", challenge.encode())], b""


class _Window:
    """Arrival times of the requests a rate limit let through, newest last."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.times: deque[float] = deque(maxlen=limit.requests)

    def admit(self, now: float) -> bool:
        # 1 ms of slack: a client pacing itself exactly must not lose to float rounding
        full = len(self.times) == self.limit.requests
        if full and now - self.times[0] < self.limit.period - 1e-3:
            return False
        self.times.append(now)
        return True


class RestHandler:
    """Every REST endpoint of the sim; ``clock`` returns unix seconds.

    ``pending_429``/``pending_500`` are armed by faults: that many next calls
    fail with that status before any other processing.
    """

    def __init__(
        self,
        *,
        sim: MarketSim,
        synthetic: SyntheticHistory,
        tokens: TokenAuthority,
        accounts: DemoAccounts,
        credentials: Mapping[str, str],
        clock: Callable[[], float],
        seed: int = 1,
        limits: RestLimits | None = None,
    ) -> None:
        self.sim, self.synthetic, self.tokens, self.accounts = sim, synthetic, tokens, accounts
        self._credentials = dict(credentials)
        self._clock = clock
        self._ids = random.Random(f"{seed}/connection-ids")
        self._negotiated: OrderedDict[str, str] = OrderedDict()  # id or token -> hub
        self.pending_429 = 0
        self.pending_500 = 0
        self.calls = 0
        self.errors = 0  # requests answered 500 because the handler failed on them
        self.throttled = 0  # 429s for exceeding the rate limits
        limits = limits if limits is not None else RestLimits()
        self._limits = {True: _Window(limits.history), False: _Window(limits.other)}
        self._routes: dict[str, tuple[type[Any] | None, Handler, bool]] = {
            "Auth/loginKey": (gw.LoginKeyRequest, self._login, False),
            "Auth/validate": (None, self._validate, True),
            "Auth/logout": (None, self._logout, True),
            "Account/search": (gw.AccountSearchRequest, self._accounts, True),
            "Contract/search": (gw.ContractSearchRequest, self._search, True),
            "Contract/searchById": (gw.ContractSearchByIdRequest, self._by_id, True),
            "Contract/available": (gw.ContractAvailableRequest, self._available, True),
            "History/retrieveBars": (gw.RetrieveBarsRequest, self._bars, True),
            "Order/searchOpen": (gw.OpenOrderSearchRequest, self._open_orders, True),
            "Order/search": (gw.OrderSearchRequest, self._orders, True),
            "Position/searchOpen": (gw.PositionSearchRequest, self._positions, True),
            "Trade/search": (gw.TradeSearchRequest, self._trades, True),
        }

    def __repr__(self) -> str:
        return f"<RestHandler calls={self.calls}>"

    # ------------------------------------------------------------------ entry

    def handle(self, method: str, target: str, headers: Headers, body: bytes) -> Reply:
        """The answer to one request; a request the handler cannot cope with is a counted
        500 (``errors``), never an exception: one request must not stop the gateway."""
        self.calls += 1
        try:
            return self._dispatch(method, target, headers, body)
        except Exception as error:
            self.errors += 1
            log.error("REST handler failed on %s %s: %r", method, target[:200], error)
            return _error(500, "Internal server error")

    def _dispatch(self, method: str, target: str, headers: Headers, body: bytes) -> Reply:
        path, _, query = target.partition("?")
        if path.startswith("/hubs/") and path.endswith("/negotiate"):
            return self._negotiate(method, path[6:-10], query, headers)
        if not path.startswith("/api/"):
            return 404, [], b""
        if self.pending_429:
            self.pending_429 -= 1
            status, extra, reply = _error(429, "Too many requests")
            return status, [*extra, (b"retry-after", b"1")], reply
        if self.pending_500:
            self.pending_500 -= 1
            return _error(500, "Internal server error")
        if path != "/api/Status/ping" and not self._limits[path.startswith(HISTORY_PREFIX)].admit(
            self._clock()
        ):
            self.throttled += 1
            return _error(429, "Too many requests")
        if path == "/api/Status/ping":
            if method != "GET":
                return 405, [], b""
            return (200, [_JSON], b'"pong"') if accepts_json(headers) else (200, [_TEXT], b"pong")
        route = self._routes.get(path[5:])
        if route is None:
            return 404, [], b""
        if method != "POST":
            return 405, [(b"allow", b"POST")], b""
        kind, handler, needs_auth = route
        claims = None
        if needs_auth:
            checked = self.tokens.check(bearer(headers))
            if isinstance(checked, str):
                return unauthorized(checked)
            claims = checked
        request = None
        if kind is not None:
            if len(body) > MAX_BODY:
                return _error(413, "request body too large")
            try:
                request = gw.decoder(kind).decode(body)
            except msgspec.DecodeError as exc:
                return _error(400, f"invalid request body: {exc}")
            except RecursionError:
                return _error(400, "invalid request body: nested too deeply")
        return 200, [_JSON], gw.ENCODER.encode(handler(request, claims))

    def hub_of(self, connection_id: str) -> str | None:
        """The hub a negotiated ``id`` (connectionId or connectionToken) belongs to."""
        return self._negotiated.get(connection_id)

    # -------------------------------------------------------------- negotiate

    def _negotiate(self, method: str, hub: str, query: str, headers: Headers) -> Reply:
        if hub not in HUBS:
            return 404, [], b""
        if method != "POST":
            return 405, [(b"allow", b"POST")], b""
        params = parse_qs(query)
        token = bearer(headers) or next(iter(params.get("access_token", ())), None)
        checked = self.tokens.check(token)
        if isinstance(checked, str):
            return unauthorized(checked)
        version = (params.get("negotiateVersion") or ["0"])[0]
        if version not in ("0", "1"):
            return _error(400, f"unsupported negotiateVersion {version[:8]!r}")
        connection_id = self._new_id()
        answer: dict[str, Any] = {
            "connectionId": connection_id,
            "negotiateVersion": int(version),
            "availableTransports": [
                {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}
            ],
        }
        self._remember(connection_id, hub)
        if version == "1":
            answer["connectionToken"] = token_id = self._new_id()
            self._remember(token_id, hub)
        return 200, [_JSON], gw.ENCODER.encode(answer)

    def _new_id(self) -> str:
        return base64.urlsafe_b64encode(self._ids.randbytes(16)).rstrip(b"=").decode()

    def _remember(self, key: str, hub: str) -> None:
        # Ids stay valid for reconnects (clients reuse the URL); the oldest are forgotten.
        self._negotiated[key] = hub
        if len(self._negotiated) > _MAX_NEGOTIATIONS:
            self._negotiated.popitem(last=False)

    # ------------------------------------------------------------------- auth

    def _login(self, request: gw.LoginKeyRequest, _: Claims | None) -> gw.LoginResponse:
        if self._credentials.get(request.user_name) != request.api_key:
            return gw.LoginResponse(success=False, error_code=ERROR_INVALID_CREDENTIALS)
        return gw.LoginResponse(token=self.tokens.mint(request.user_name))

    def _validate(self, _: None, claims: Claims | None) -> gw.ValidateResponse:
        assert claims is not None
        return gw.ValidateResponse(new_token=self.tokens.mint(claims.sub))

    def _logout(self, _: None, claims: Claims | None) -> gw.LogoutResponse:
        assert claims is not None
        self.tokens.logout(claims)
        return gw.LogoutResponse()

    # ----------------------------------------------------------- market data

    def _accounts(
        self, request: gw.AccountSearchRequest, _: Claims | None
    ) -> gw.AccountSearchResponse:
        only = request.only_active_accounts
        return gw.AccountSearchResponse(
            accounts=self.accounts.accounts(mark(self.sim), only_active=only)
        )

    def _contracts(self) -> list[gw.Contract]:
        return [
            gw.Contract(s.id, s.name, s.description, s.tick_size, s.tick_value, True, s.symbol_id)
            for s in self.sim.contracts
        ]

    def _search(
        self, request: gw.ContractSearchRequest, _: Claims | None
    ) -> gw.ContractSearchResponse:
        text = request.search_text.strip().lower()
        found = [
            c
            for c in self._contracts()
            if text in c.id.lower() or text in c.name.lower() or text in c.description.lower()
        ]
        return gw.ContractSearchResponse(contracts=found)

    def _by_id(
        self, request: gw.ContractSearchByIdRequest, _: Claims | None
    ) -> gw.ContractSearchByIdResponse:
        for contract in self._contracts():
            if contract.id == request.contract_id:
                return gw.ContractSearchByIdResponse(contract=contract)
        return gw.ContractSearchByIdResponse(success=False, error_code=ERROR_NOT_FOUND)

    def _available(
        self, _: gw.ContractAvailableRequest, __: Claims | None
    ) -> gw.ContractSearchResponse:
        return gw.ContractSearchResponse(contracts=self._contracts())

    def _bars(self, request: gw.RetrieveBarsRequest, _: Claims | None) -> gw.RetrieveBarsResponse:
        return retrieve_bars(self.sim, self.synthetic, request, self._clock())

    # -------------------------------------------------------------- account

    def _open_orders(
        self, request: gw.OpenOrderSearchRequest, _: Claims | None
    ) -> gw.OrderSearchResponse:
        return gw.OrderSearchResponse(orders=self.accounts.open_orders(request.account_id))

    def _orders(self, request: gw.OrderSearchRequest, _: Claims | None) -> gw.RestResponse:
        window = self._window(request.start_timestamp, request.end_timestamp)
        if isinstance(window, gw.RestResponse):
            return window
        return gw.OrderSearchResponse(
            orders=self.accounts.orders_between(request.account_id, *window)
        )

    def _positions(
        self, request: gw.PositionSearchRequest, _: Claims | None
    ) -> gw.PositionSearchResponse:
        return gw.PositionSearchResponse(positions=self.accounts.open_positions(request.account_id))

    def _trades(self, request: gw.TradeSearchRequest, _: Claims | None) -> gw.RestResponse:
        window = self._window(request.start_timestamp, request.end_timestamp)
        if isinstance(window, gw.RestResponse):
            return window
        return gw.TradeSearchResponse(
            trades=self.accounts.trades_between(request.account_id, *window)
        )

    def _window(self, start: str, end: str | None) -> tuple[int, int] | gw.RestResponse:
        try:
            lo = parse_time(start)
            hi = parse_time(end) if end else 1 << 62
        except (ValueError, OverflowError):
            return _invalid(f"unreadable time window {start[:40]!r}..{(end or '')[:40]!r}")
        return lo, hi


def _invalid(message: str) -> gw.RestResponse:
    """What ASP.NET's model binding would refuse (HTTP 200 here: the body did decode)."""
    return gw.RestResponse(success=False, error_code=ERROR_NOT_FOUND, error_message=message)


def mock_transport(handler: RestHandler) -> httpx.MockTransport:
    """``handler`` as an httpx transport: the whole REST API without a socket."""

    def respond(request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode("ascii")
        status, headers, body = handler.handle(
            request.method, target, request.headers.raw, request.content
        )
        return httpx.Response(status, headers=headers, content=body)

    return httpx.MockTransport(respond)
