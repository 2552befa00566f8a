"""The history actor: back-fills bars from History/retrieveBars at start and after every gap.

Theory of operation
-------------------
Live bars are built from trades. Whatever the node did not see (before it
started, while the market hub was down) comes from the gateway's history:
closed bars only (``includePartialBar: false``), told to the bars actor as one
``BackfillBars`` per contract x timeframe. The bars actor merges without
duplicates and lets a live bar win, so asking for a little more than is missing
is always safe, and asking for less loses bars.

Two tasks of one actor share its state on one thread, as in auth. The *inbox
loop* follows the market hub through ``Connected``/``Disconnected`` on
``topic.events`` and never waits on HTTP, so the topic never backs up behind a
slow gateway. The *fetcher* makes every HTTP call, one at a time. Work passes
between them as data, ``_initial`` (the start-up back-fill is due) and
``_gap_from`` (the earliest unix time whose bars may be missing), and an Event
wakes the fetcher. State changes only between awaits, so no lock is needed.

What the inbox loop knows of the market hub (``_TRANSITIONS``):

=========  ============  ===============================================  =======
state      event         action                                           next
=========  ============  ===============================================  =======
unknown    Connected     gap from the actor's start                       up
unknown    Disconnected  mark: the gap starts now                         down
up         Connected     none                                             up
up         Disconnected  mark: the gap starts now                         down
down       Connected     gap from the mark                                up
down       Disconnected  none: the earliest mark is kept                  down
=========  ============  ===============================================  =======

``unknown`` is the start. The start-up back-fill reaches only to the moment it
is made; a hub that connects later leaves the bars in between to nobody, hence
the first Connected asks for the gap since the start. A Disconnected first
means the hub was already up, and live trades covered everything until then.

Invariants: gaps coalesce (one queued while the fetcher is busy merges with
the next into one, from the earliest time); a failed request is retried a
bounded number of times, then counted and skipped, never raised (the live feed
matters more than history); the token is only ever put in a header.

A gap from ``t`` asks, per timeframe, for ``[start of the bar before the bar
containing t, now)``: the bar open at ``t`` was built live only in part, the
one before is margin against clocks that disagree. At most ``max_bars`` come
back, the newest; an outage longer than that is counted as ``truncated``.
The start-up back-fill asks for the newest ``initial_bars``, from far enough
back to find that many bars of a market that closes on weekends and holidays.

History bars carry no trade count: ``Bar.trades`` is 0 for them, meaning
"unknown", never "no trades" (their volume is real).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import anyio
import httpx
import msgspec

from protocols import gateway as gw
from protocols import rest
from protocols.errors import ConfigError, GatewayError, PxError
from protocols.hubs import Connected, Disconnected, SubscribeContract
from protocols.interfaces import ActorContext, Inbox, Ref
from protocols.messages import (
    BackfillBars,
    Bar,
    CountersReported,
    GetToken,
    RefreshToken,
    Stop,
    TokenIssued,
    TrackTimeframes,
)
from protocols.secrets import Secret, redact
from protocols.timeframes import BarClock, Timeframe, parse_timeframe

logger = logging.getLogger("pxnode.history")

PATH: Final = "/api/History/retrieveBars"
UNITS: Final = {
    "sec": gw.BarUnit.SECOND,
    "min": gw.BarUnit.MINUTE,
    "hr": gw.BarUnit.HOUR,
    "day": gw.BarUnit.DAY,
    "week": gw.BarUnit.WEEK,
    "month": gw.BarUnit.MONTH,
}
"""The gateway's ``unit`` per timeframe unit; ``unitNumber`` is the timeframe's N."""

FAILURES: Final = ("transient", "unauthorized", "auth", "rejected", "malformed")
"""Why a request was given up: 429/5xx/timeout/transport after every retry; 401 again
after a fresh token; no token from auth; refused (HTTP 4xx, ``success: false``);
an answer that is not a retrieveBars response."""

REJECTS: Final = ("malformed", "time", "price", "volume", "unaligned", "partial")
"""Why one history bar was dropped: not a bar; ``t`` unreadable or before the window
asked for; prices not finite, not positive or not low <= open, close <= high; volume
negative or beyond int64; start not on a bar boundary of the timeframe; a bar not
closed at the end of the window (the live bar is built from trades)."""

COUNTERS: Final = (
    "requests",  # HTTP requests sent, retries included
    "bars_received",  # history bars in answers, before rejections
    "backfills",  # BackfillBars told to the bars actor
    "gaps",  # gap back-fills started (coalesced)
    "truncated",  # gap answers that hit max_bars: older bars of the gap are missing
    *(f"failures_{kind}" for kind in FAILURES),
    *(f"bars_rejected_{reason}" for reason in REJECTS),
)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_INT64: Final = 1 << 63
# Longest length of one bar per unit, in µs (a month is at most 31 days, a DST day 25 h).
_LONGEST_US: Final = {
    "sec": 1_000_000,
    "min": 60_000_000,
    "hr": 3_600_000_000,
    "day": 25 * 3_600_000_000,
    "week": 7 * 86_400_000_000 + 3_600_000_000,
    "month": 31 * 86_400_000_000 + 3_600_000_000,
}
# A market open 5 days in 7 less holidays: N bars of trading span up to ~1.5 N of calendar.
_CALENDAR_PER_TRADING: Final = 1.5

# (hub state, event) -> (next state, action); see the table in the module docstring.
_TRANSITIONS: Final = {
    ("unknown", "connected"): ("up", "gap"),
    ("unknown", "disconnected"): ("down", "mark"),
    ("up", "connected"): ("up", "none"),
    ("up", "disconnected"): ("down", "mark"),
    ("down", "connected"): ("up", "gap"),
    ("down", "disconnected"): ("down", "none"),
}


class HistoryConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What to back-fill and how hard to try; invalid values raise ``ConfigError``.

    ``contracts`` are contract ids; ``timeframes`` DESIGN names (``"1min"``,
    ``"4hr"``), the same the bars actor builds. ``initial_bars`` bars per
    contract x timeframe are fetched at start (0: none); ``max_bars`` is the gateway's
    limit per request (20000 for ProjectX), the most a gap can recover.
    ``min_lookback`` (seconds) is how far back the start-up request reaches at
    least, so that the last bars are found across a long weekend. ``live`` is
    the gateway's flag (live rather than simulated-account data).

    Times are seconds. Retries cover 429 (waiting ``Retry-After``, capped at
    ``retry_after_max``), 5xx, timeouts and transport errors, with backoff from
    ``backoff_min`` doubling to ``backoff_max``, shortened by up to
    ``backoff_jitter`` (a fraction), ``max_attempts`` calls in all.
    ``token_timeout`` bounds the wait for auth (a login can take its retries).
    """

    contracts: list[str]
    timeframes: list[str]
    api_url: str = "https://api.topstepx.com"
    initial_bars: int = 200
    max_bars: int = 20_000
    request_timeout: float = 30.0
    live: bool = False
    min_lookback: float = 4 * 86_400.0
    token_timeout: float = 60.0
    max_attempts: int = 4
    backoff_min: float = 1.0
    backoff_max: float = 30.0
    backoff_jitter: float = 0.1
    retry_after_max: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.contracts, list) or not self.contracts:
            raise ConfigError("history: contracts must be a non-empty list of contract ids")
        if not all(isinstance(c, str) and c for c in self.contracts):
            raise ConfigError("history: every contract must be a non-empty string")
        if not isinstance(self.timeframes, list) or not self.timeframes:
            raise ConfigError("history: timeframes must be a non-empty list, e.g. ['1min']")
        for text in self.timeframes:
            parse_timeframe(text)
        if not self.api_url.startswith(("http://", "https://")):
            raise ConfigError(f"history: api_url must be an http(s) URL, got {self.api_url!r}")
        if not 1 <= self.max_bars <= 1_000_000:
            raise ConfigError(f"history: max_bars must be in 1..1000000, got {self.max_bars}")
        if not 0 <= self.initial_bars <= self.max_bars:
            raise ConfigError(
                f"history: initial_bars must be in 0..max_bars ({self.max_bars}), "
                f"got {self.initial_bars}"
            )
        if not 1 <= self.max_attempts <= 100:
            raise ConfigError(f"history: max_attempts must be in 1..100, got {self.max_attempts}")
        for name in ("min_lookback", "retry_after_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"history: {name} must be a finite number >= 0, got {value!r}")
        for name in ("request_timeout", "token_timeout", "backoff_min", "backoff_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"history: {name} must be a finite number > 0, got {value!r}")
        if self.backoff_min > self.backoff_max:
            raise ConfigError("history: backoff_min must not exceed backoff_max")
        if not 0 <= self.backoff_jitter < 1:
            raise ConfigError(
                f"history: backoff_jitter must be in [0, 1), got {self.backoff_jitter}"
            )


class _Failed(Exception):
    """A request given up on; ``kind`` is one of ``FAILURES``, the message holds no secret."""

    def __init__(self, kind: str, what: str) -> None:
        super().__init__(what)
        self.kind = kind


class _Refused(Exception):
    """HTTP 401: the token is no good; a fresh one may be."""


class _LooseBars(gw.RestResponse, frozen=True):
    """A retrieveBars answer whose bars are judged one by one (one bad bar spoils none)."""

    bars: list[msgspec.Raw] = []


class HistoryActor:
    """Asks History/retrieveBars for what live trades cannot give and tells ``BackfillBars``."""

    _wake: anyio.Event  # set when there is work for the fetcher; a new one per round

    def __init__(
        self,
        config: HistoryConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._transport = transport
        self._rng = rng if rng is not None else random.Random(0)
        self._policy = msgspec.convert(config, rest.RetryPolicy, from_attributes=True)
        self._contracts = list(dict.fromkeys(config.contracts))
        frames = {tf.name: tf for tf in map(parse_timeframe, config.timeframes)}
        self._timeframes: list[Timeframe] = list(frames.values())
        self._hub = "unknown"
        self._down_since = 0.0  # unix time the bars may be missing from (while not "up")
        self._initial = config.initial_bars > 0
        self._gap_from: float | None = None
        self._added: list[tuple[str, Timeframe]] = []  # series subscribed at run time
        self._token: Secret | None = None  # the last token used, to redact echoes of it
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def __repr__(self) -> str:
        return f"<HistoryActor hub={self._hub} gap_from={self._gap_from}>"

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        refs = (ctx.ref("auth"), ctx.ref("bars"), ctx.ref("stats"))
        self._down_since = ctx.wall_time()
        self._wake = anyio.Event()
        if self._initial:
            self._wake.set()
        async with (
            httpx.AsyncClient(
                base_url=self._config.api_url,
                transport=self._transport,
                timeout=self._config.request_timeout,
            ) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(self._fetch_forever, client, ctx, *refs)
            ctx.report_healthy()
            async for msg in inbox:
                if isinstance(msg, Stop):
                    break
                self._on_message(msg, ctx)
            # A back-fill under way is abandoned: its bars would reach a node that stops.
            tg.cancel_scope.cancel()

    # ------------------------------------------------------------ inbox loop

    def _on_message(self, msg: Any, ctx: ActorContext) -> None:
        match msg:
            case Connected(hub="market"):
                self._on_hub_event("connected", ctx)
            case Disconnected(hub="market"):
                self._on_hub_event("disconnected", ctx)
            case SubscribeContract(contract=contract) if isinstance(contract, str) and contract:
                if contract not in self._contracts:
                    self._contracts.append(contract)
                    self._add([(contract, tf) for tf in self._timeframes])
            case TrackTimeframes(timeframes=names):
                try:
                    added = [parse_timeframe(name) for name in names]
                except (ConfigError, TypeError):
                    return
                known = {tf.name for tf in self._timeframes}
                fresh = [tf for tf in dict.fromkeys(added) if tf.name not in known]
                self._timeframes.extend(fresh)
                self._add([(contract, tf) for contract in self._contracts for tf in fresh])
            case _:
                pass  # topic.events carries much else; none of it is ours

    def _add(self, series: list[tuple[str, Timeframe]]) -> None:
        """Series subscribed at run time get their own start-up back-fill."""
        if series and self._config.initial_bars > 0:
            self._added.extend(series)
            self._wake.set()

    def _on_hub_event(self, event: str, ctx: ActorContext) -> None:
        self._hub, action = _TRANSITIONS[self._hub, event]
        if action == "mark":
            self._down_since = ctx.wall_time()
        elif action == "gap":
            since = self._down_since
            self._gap_from = since if self._gap_from is None else min(self._gap_from, since)
            self._wake.set()

    # --------------------------------------------------------------- fetcher

    async def _fetch_forever(
        self,
        client: httpx.AsyncClient,
        ctx: ActorContext,
        auth: Ref[Any],
        bars: Ref[Any],
        stats: Ref[Any],
    ) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            initial, self._initial = self._initial, False
            gap_from, self._gap_from = self._gap_from, None
            added, self._added = self._added, []
            if initial:
                logger.info("initial back-fill: last %d bars", self._config.initial_bars)
                await self._backfill(client, ctx, auth, bars, stats, None)
            elif added:
                await self._backfill(client, ctx, auth, bars, stats, None, added)
            if gap_from is not None:
                self.counters["gaps"] += 1
                logger.info("back-filling a gap of %.1f s", ctx.wall_time() - gap_from)
                await self._backfill(client, ctx, auth, bars, stats, gap_from)

    async def _backfill(
        self,
        client: httpx.AsyncClient,
        ctx: ActorContext,
        auth: Ref[Any],
        bars: Ref[Any],
        stats: Ref[Any],
        gap_from: float | None,
        series: list[tuple[str, Timeframe]] | None = None,
    ) -> None:
        """One request per contract x timeframe (or per given series): start-up window or gap."""
        config = self._config
        if series is None:
            series = [(contract, tf) for contract in self._contracts for tf in self._timeframes]
        for contract, tf in series:
            now_us = round(ctx.wall_time() * 1_000_000)
            if gap_from is None:
                reach = config.initial_bars * _LONGEST_US[tf.unit] * tf.n
                lookback = round(reach * _CALENDAR_PER_TRADING + config.min_lookback * 1e6)
                start_us, limit = now_us - lookback, config.initial_bars
            else:
                gap_us = round(gap_from * 1_000_000)
                start_us, limit = _bar_before(tf, gap_us), config.max_bars
            request = gw.RetrieveBarsRequest(
                contract_id=contract,
                live=config.live,
                start_time=_iso(start_us),
                end_time=_iso(now_us),
                unit=UNITS[tf.unit],
                unit_number=tf.n,
                limit=limit,
                include_partial_bar=False,
            )
            try:
                answer = await self._retrieve(client, auth, gw.ENCODER.encode(request))
            except _Failed as exc:
                self.counters[f"failures_{exc.kind}"] += 1
                logger.warning("no history for %s %s: %s", contract, tf.name, exc)
            else:
                got = self._convert(contract, tf, answer, start_us, now_us)
                if gap_from is not None and len(answer) >= limit:
                    self.counters["truncated"] += 1
                    logger.warning(
                        "gap of %s %s exceeds %d bars: older bars stay missing",
                        contract,
                        tf.name,
                        limit,
                    )
                if got:
                    await bars.tell(BackfillBars(contract, tf.name, got))
                    self.counters["backfills"] += 1
            self._report(stats)

    def _convert(
        self, contract: str, tf: Timeframe, items: list[Any], start_us: int, end_us: int
    ) -> list[Bar]:
        """History bars (newest first) as ``Bar``s oldest first; rejects are counted by reason."""
        clock = BarClock(tf)
        good: list[Bar] = []
        for item in items:
            bar = _to_bar(contract, tf, clock, item, (start_us, end_us))
            if isinstance(bar, Bar):
                good.append(bar)
            else:
                self.counters[f"bars_rejected_{bar}"] += 1
        good.sort(key=_start)
        return good

    def _report(self, stats: Ref[Any]) -> None:
        # Counters are cumulative, so a report lost to a full mailbox loses no count.
        with contextlib.suppress(
            anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError, PxError
        ):
            stats.tell_nowait(CountersReported(source="history", counters=dict(self.counters)))

    # ----------------------------------------------------------------- HTTP

    async def _retrieve(self, client: httpx.AsyncClient, auth: Ref[Any], body: bytes) -> list[Any]:
        """The bars of one logical request: a token, retries, one more token after a 401."""
        try:
            return await self._with_retries(client, body, await self._ask_token(auth))
        except _Refused:
            logger.info("token refused (HTTP 401); asking auth for a new one")
        await auth.tell(RefreshToken())
        try:
            return await self._with_retries(client, body, await self._ask_token(auth))
        except _Refused:
            raise _Failed("unauthorized", "HTTP 401 with a fresh token") from None

    async def _ask_token(self, auth: Ref[Any]) -> Secret:
        try:
            reply = await auth.ask(GetToken(), self._config.token_timeout)
        except PxError as exc:  # AskTimeout, or auth is gone
            raise _Failed("auth", f"no token: {exc}") from None
        if not isinstance(reply, TokenIssued):
            raise _Failed("auth", f"no token: {getattr(reply, 'reason', type(reply).__name__)}")
        self._token = reply.token
        return reply.token

    async def _with_retries(
        self, client: httpx.AsyncClient, body: bytes, token: Secret
    ) -> list[Any]:
        policy = self._policy
        try:
            return await rest.with_retries(
                lambda: self._attempt(client, body, token),
                policy,
                self._rng,
                log=logger,
                label="retrieveBars attempt",
            )
        except rest.Transient as exc:
            raise _Failed(
                "transient", f"gave up after {policy.max_attempts} attempts: {exc}"
            ) from None

    async def _attempt(self, client: httpx.AsyncClient, body: bytes, token: Secret) -> list[Any]:
        self.counters["requests"] += 1
        try:
            response = await rest.post_json(client, PATH, body, self._policy, bearer=token)
        except GatewayError as exc:  # a request that cannot be made: repeating won't help
            raise _Failed("malformed", str(exc)) from None
        status = response.status_code
        if status == 401:
            raise _Refused
        if status != 200:
            raise _Failed("rejected", f"HTTP {status}")
        return self._decode(response.content)

    def _decode(self, content: bytes) -> list[Any]:
        """The answer's bar items: ``HistoryBar``s, or raw items where one failed to decode."""
        answer: gw.RetrieveBarsResponse | _LooseBars
        try:
            answer = gw.decoder(gw.RetrieveBarsResponse).decode(content)
        except msgspec.ValidationError:
            try:  # the envelope may be fine and only some bars bad
                answer = gw.decoder(_LooseBars).decode(content)
            except msgspec.DecodeError:
                raise _Failed("malformed", "not a retrieveBars answer") from None
        except msgspec.DecodeError:
            raise _Failed("malformed", "answer is not JSON") from None
        if not answer.success:
            detail = self._redact(answer.error_message or "")[:200]
            raise _Failed("rejected", f"errorCode {answer.error_code} ({detail})")
        items: list[Any] = answer.bars
        self.counters["bars_received"] += len(items)
        return items

    def _redact(self, text: str) -> str:
        return redact(text, self._token) if self._token is not None else text


def _to_bar(
    contract: str, tf: Timeframe, clock: BarClock, item: Any, window: tuple[int, int]
) -> Bar | str:
    """One history bar as a ``Bar``, or the reason (one of ``REJECTS``) it is refused."""
    if isinstance(item, msgspec.Raw):
        try:
            item = gw.decoder(gw.HistoryBar).decode(item)
        except msgspec.DecodeError:
            return "malformed"
    try:
        moment = datetime.fromisoformat(item.t)
    except ValueError:
        return "time"
    if moment.tzinfo is None:  # no offset: UTC, as everywhere at the gateway edge
        moment = moment.replace(tzinfo=UTC)
    start = (moment - _EPOCH) // _ONE_US
    if start < window[0]:
        return "time"
    o, h, low, c, v = item.o, item.h, item.l, item.c, item.v
    if not (0 < low <= o <= h < math.inf and low <= c <= h):
        return "price"  # also catches NaN: every comparison with it is false
    if not 0 <= v < _INT64:
        return "volume"
    try:
        lo, hi = clock.bounds(start)
    except (ValueError, OverflowError):
        return "time"
    if lo != start:
        return "unaligned"
    if hi > window[1]:
        return "partial"
    return Bar(contract, tf.name, start, o, h, low, c, v, trades=0)


def _bar_before(tf: Timeframe, ts_us: int) -> int:
    """Start of the bar before the one that contains ``ts_us``."""
    clock = BarClock(tf)
    return clock.start_of(clock.start_of(ts_us) - 1)


def _iso(ts_us: int) -> str:
    return (_EPOCH + ts_us * _ONE_US).isoformat()


def _start(bar: Bar) -> int:
    return bar.start
