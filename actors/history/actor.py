"""HistoryActor: the inbox loop follows the market hub, the fetcher makes every REST call.

See the package docstring for the theory of operation; the pure rules it runs
on (hub states, request windows, the checks on each history bar) are in
``window``.
"""

from __future__ import annotations

import contextlib
import logging
import random
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

from .config import COUNTERS, UNITS, HistoryConfig
from .window import TRANSITIONS, bar_before, initial_start, iso, to_bar

logger = logging.getLogger("pxnode.history")

PATH: Final = "/api/History/retrieveBars"


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
        self._hub, action = TRANSITIONS[self._hub, event]
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
                start_us = initial_start(tf, now_us, config.initial_bars, config.min_lookback)
                limit = config.initial_bars
            else:
                gap_us = round(gap_from * 1_000_000)
                start_us, limit = bar_before(tf, gap_us), config.max_bars
            request = gw.RetrieveBarsRequest(
                contract_id=contract,
                live=config.live,
                start_time=iso(start_us),
                end_time=iso(now_us),
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
            bar = to_bar(contract, tf, clock, item, (start_us, end_us))
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


def _start(bar: Bar) -> int:
    return bar.start
