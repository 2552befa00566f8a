"""HistoryActor: the inbox loop follows the market hub, the fetcher runs the rounds.

See the package docstring for the theory of operation; the pure rules it runs
on (hub states, the cut, segments, the checks on each source bar, derivation)
are in ``window``, and each REST call is ``retrieve``'s.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from protocols import rest
from protocols.errors import ConfigError
from protocols.hubs import Connected, Disconnected, SubscribeContract
from protocols.interfaces import ActorContext, Inbox, Ref
from protocols.messages import (
    BackfillBars,
    BackfillStarted,
    BackfillState,
    CountersReported,
    CutPassed,
    GetBackfill,
    Request,
    Stop,
    TrackTimeframes,
)
from protocols.timeframes import Timeframe, parse_timeframe

from .config import COUNTERS, HistoryConfig
from .retrieve import Fetched, Retriever
from .window import (
    SOURCES,
    TRANSITIONS,
    Segment,
    Source,
    bar_before,
    cut_after,
    derive,
    first_whole_bar,
    initial_since,
    segments,
)

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("pxnode.history")

Series: TypeAlias = tuple[str, Timeframe]


class HistoryActor:
    """Asks History/retrieveBars for what live trades cannot give and tells ``BackfillBars``."""

    _wake: anyio.Event  # set when there is work for the fetcher; a new one per wait
    _on_pass: anyio.Event  # set when a CutPassed arrives or a cut is made; a new one per wait

    def __init__(
        self,
        config: HistoryConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        budget: rest.RestBudget | None = None,
    ) -> None:
        self._config = config
        self._transport = transport
        self._rng = rng if rng is not None else random.Random(0)
        self._budget = budget
        self._contracts = list(dict.fromkeys(config.contracts))
        frames = {tf.name: tf for tf in map(parse_timeframe, config.timeframes)}
        self._timeframes: dict[str, Timeframe] = frames
        self._hub = "unknown"
        self._down_since = 0.0  # unix time the bars may be missing from (while not "up")
        self._want: dict[Series, int] = {}  # series -> bar start history must cover from
        self._cuts: dict[Series, int] = {}  # wanted series -> µs its back-fill will cover up to
        self._passed: dict[int, float] = {}  # cut -> when a live trade reached it
        self._lag = 0.0  # s the gateway's clock was behind ours at the last cut passed
        self._done: set[Series] = set()  # back-filled at least once
        self._failed: dict[Series, str] = {}  # refused by the gateway: not asked again
        self._retrying: dict[Series, str] = {}  # given up on, wanted still: why
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._retriever = Retriever(config, self.counters, self._rng, budget)

    def __repr__(self) -> str:
        cuts = sorted(set(self._cuts.values()))
        return f"<HistoryActor hub={self._hub} want={len(self._want)} cuts={cuts}>"

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        import httpx

        auth, bars, stats = ctx.ref("auth"), ctx.ref("bars"), ctx.ref("stats")
        self._down_since = ctx.wall_time()
        self._wake = anyio.Event()
        self._on_pass = anyio.Event()
        self._wish(self._series(self._contracts, self._timeframes.values()), ctx, initial=True)
        async with (
            httpx.AsyncClient(
                base_url=self._config.api_url,
                transport=self._transport,
                timeout=self._config.request_timeout,
            ) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(self._fetch_forever, client, ctx, auth, bars, stats)
            ctx.report_healthy()
            async for msg in inbox:
                if isinstance(msg, Stop):
                    break
                await self._on_message(msg, ctx, bars)
            # A back-fill under way is abandoned: its bars would reach a node that stops.
            tg.cancel_scope.cancel()

    # ------------------------------------------------------------ inbox loop

    async def _on_message(self, msg: Any, ctx: ActorContext, bars: Ref[Any]) -> None:
        match msg:
            case Connected(hub="market"):
                await self._on_hub_event("connected", ctx, bars)
            case CutPassed(cut=cut) if cut in self._cuts.values() and cut not in self._passed:
                now = ctx.wall_time()
                self._passed[cut] = now
                self._lag = min(max(0.0, now - cut / 1e6), self._config.max_clock_lag)
                self._on_pass.set()
            case Disconnected(hub="market", silent_since=silent_since):
                await self._on_hub_event("disconnected", ctx, bars, silent_since)
            case Request(body=GetBackfill(), reply=reply):
                reply.try_tell(self._state())
            case SubscribeContract(contract=contract) if isinstance(contract, str) and contract:
                if contract not in self._contracts:
                    self._contracts.append(contract)
                    await self._add(self._series([contract], self._timeframes.values()), ctx, bars)
            case TrackTimeframes(timeframes=names):
                try:
                    frames = [parse_timeframe(name) for name in names]
                except (ConfigError, TypeError):
                    return
                fresh = {tf.name: tf for tf in frames if tf.name not in self._timeframes}
                self._timeframes.update(fresh)
                await self._add(self._series(self._contracts, fresh.values()), ctx, bars)
            case _:
                pass  # topic.events carries much else; none of it is ours

    def _series(self, contracts: list[str], frames: Iterable[Timeframe]) -> list[Series]:
        return [(contract, tf) for contract in contracts for tf in frames]

    def _wish(
        self, series: list[Series], ctx: ActorContext, *, initial: bool = False, since: float = 0
    ) -> None:
        """History must cover ``series`` from their start-up window, or from ``since``."""
        now_us = round(ctx.wall_time() * 1_000_000)
        config = self._config
        for key in series:
            tf = key[1]
            if initial and config.initial_bars > 0:
                start = initial_since(tf, now_us, config.initial_bars, config.min_lookback)
            else:
                start = bar_before(tf, round((since or ctx.wall_time()) * 1_000_000))
            self._want[key] = min(self._want.get(key, start), start)

    async def _add(self, series: list[Series], ctx: ActorContext, bars: Ref[Any]) -> None:
        """Series subscribed at run time get their own start-up back-fill, with a cut of
        their own: the series waiting for theirs keep them, so subscriptions however
        frequent never postpone a gap's back-fill."""
        if series:
            self._wish(series, ctx, initial=True)
            if self._hub == "up":  # else the next Connected cuts
                await self._new_cut(series, ctx, bars)

    async def _on_hub_event(
        self, event: str, ctx: ActorContext, bars: Ref[Any], silent_since: float | None = None
    ) -> None:
        self._hub, action = TRANSITIONS[self._hub, event]
        if action == "mark":
            # A silent socket is noticed a timeout after its last event: the gap began then,
            # by our clock; the trades it misses carry the gateway's, ``_lag`` behind.
            since = ctx.wall_time()
            if isinstance(silent_since, float) and math.isfinite(silent_since):
                since = min(since, silent_since)
            self._down_since = since - self._lag
        elif action == "gap":
            self.counters["gaps"] += 1
            series = self._series(self._contracts, self._timeframes.values())
            self._wish(series, ctx, since=self._down_since)
            await self._new_cut(list(self._want), ctx, bars)

    async def _new_cut(self, series: list[Series], ctx: ActorContext, bars: Ref[Any]) -> None:
        """``series`` are now filled up to a new cut; bars keeps the live part apart.

        A gap gives every wanted series the new cut: live trades missed the time
        since the old one too. Cuts made within one second are one: their series
        share a round.
        """
        cut = cut_after(round(ctx.wall_time() * 1_000_000), self._config.cut_margin)
        for key in series:
            self._cuts[key] = cut
        live = set(self._cuts.values())
        self._passed = {old: at for old, at in self._passed.items() if old in live}
        self._on_pass.set()  # a fetcher waiting on a cut just replaced starts over at once
        self.counters["cuts"] += 1
        by_contract: dict[str, list[str]] = {}
        for contract, tf in series:
            by_contract.setdefault(contract, []).append(tf.name)
        for contract, names in by_contract.items():
            await bars.tell(BackfillStarted(contract, names, cut))
        self._wake.set()

    def _state(self) -> BackfillState:
        every = self._series(self._contracts, self._timeframes.values())
        return BackfillState(
            pending=[_label(key) for key in every if key not in self._done or key in self._want],
            failed={_label(key): why for key, why in self._failed.items()},
            retrying={_label(key): why for key, why in self._retrying.items()},
        )

    # --------------------------------------------------------------- fetcher

    async def _fetch_forever(
        self,
        client: httpx.AsyncClient,
        ctx: ActorContext,
        auth: Ref[Any],
        bars: Ref[Any],
        stats: Ref[Any],
    ) -> None:
        """One round per cut, the oldest first. Given up on (its series told empty, the
        cut released), a gap is not forgotten: a new cut tries it again once a delay
        has passed, unless a reconnect's comes first. That delay runs on while rounds
        of series added meanwhile go by, so they cannot postpone it either.
        """
        refills = 0  # refills in a row that gave a series up again
        refill_at: float | None = None  # anyio time of the next refill, if one is due
        while True:
            if not self._cuts:
                left = None if refill_at is None else refill_at - anyio.current_time()
                with anyio.move_on_after(left):
                    await self._wake.wait()
                self._wake = anyio.Event()
            if refill_at is not None and anyio.current_time() >= refill_at:
                refill_at = None
                given_up = [key for key in self._want if key not in self._cuts]
                if given_up and self._hub == "up":
                    self.counters["refills"] += 1
                    await self._new_cut(given_up, ctx, bars)
            if self._cuts:
                cut = min(self._cuts.values())
                await self._settled(cut, ctx)
                await self._round(client, cut, auth, bars, stats)
            given_up = [key for key in self._want if key not in self._cuts]
            if not given_up:
                refills = 0
                refill_at = None
            elif refill_at is None and self._hub == "up":
                refills += 1
                delay = self._refill_delay(refills)
                refill_at = anyio.current_time() + delay
                logger.warning(
                    "history back-fill of %d series given up; trying again in %.0f s",
                    len(given_up),
                    delay,
                )

    async def _settled(self, cut: int, ctx: ActorContext) -> None:
        """Until the gateway's bars before ``cut`` are final: ``settle`` after its clock
        passed the cut. A live trade at or after the cut says it has (``CutPassed``);
        a clock behind the node's says so later than the node's own clock would (asked
        then, its answer lacked the cut's last seconds, and the live trades of those
        seconds went as history's). A quiet market says nothing: ``max_clock_lag``
        after the cut, the node's clock is taken at its word.
        """
        config = self._config
        deadline = cut / 1e6 + config.max_clock_lag
        while cut not in self._passed and cut in self._cuts.values():
            left = deadline - ctx.wall_time()
            if left <= 0:
                break
            with anyio.move_on_after(left):
                await self._on_pass.wait()
            self._on_pass = anyio.Event()
        if cut not in self._cuts.values():
            return  # a reconnect's cut took its place: the round is the new cut's
        passed = self._passed.get(cut, deadline)
        wait = max(cut / 1e6, passed) + config.settle - ctx.wall_time()
        if wait > 0:
            await anyio.sleep(wait)

    def _refill_delay(self, refills: int) -> float:
        config = self._config
        low, high, jitter = config.refill_min, config.refill_max, config.backoff_jitter
        return rest.jittered_backoff(refills, low, high, jitter, self._rng)

    async def _round(
        self, client: httpx.AsyncClient, cut: int, auth: Ref[Any], bars: Ref[Any], stats: Ref[Any]
    ) -> None:
        """Back-fill every series waiting for ``cut``: one request per contract and source.

        Sources go shortest first, and each timeframe is told as soon as its
        sources are in, so 1min series are ready before 1day ones. A series
        given a new cut meanwhile (a reconnect) is left to that cut's round.
        """
        want = {key: since for key, since in self._want.items() if self._cuts.get(key) == cut}
        plans = {key: segments(key[1], since, cut) for key, since in want.items()}
        fetched: dict[tuple[str, Source], Fetched | rest.Failed] = {}
        told: set[Series] = set()
        for source in SOURCES:
            for contract in dict.fromkeys(contract for contract, _ in want):
                windows = [
                    (lo, hi)
                    for key, parts in plans.items()
                    if key[0] == contract and self._cuts.get(key) == cut
                    for src, lo, hi in parts
                    if src == source
                ]
                if not windows:
                    continue
                fetched[contract, source] = await self._retriever.fetch(
                    client, auth, contract, source, windows
                )
                self._report(stats)
            for key, parts in plans.items():
                if key in told or any((key[0], src) not in fetched for src, _, _ in parts):
                    continue
                told.add(key)
                if self._cuts.get(key) == cut:
                    await self._tell(key, parts, want[key], cut, fetched, bars)

    async def _tell(
        self,
        key: Series,
        parts: list[Segment],
        since: int,
        cut: int,
        fetched: dict[tuple[str, Source], Fetched | rest.Failed],
        bars: Ref[Any],
    ) -> None:
        contract, tf = key
        results = [fetched[contract, src] for src, _, _ in parts]
        failure = next((r for r in results if isinstance(r, rest.Failed)), None)
        if failure is not None:
            message = BackfillBars(contract, tf.name, [], since=cut, cut=cut)
        else:
            # The oldest segment decides where whole bars begin (a truncated answer begins late).
            oldest = fetched[contract, parts[0][0]] if parts else None
            begin = max(since, oldest.begin) if isinstance(oldest, Fetched) else since
            complete_from = first_whole_bar(tf, begin)
            rows = {
                src: r.rows
                for src, r in zip([p[0] for p in parts], results, strict=True)
                if isinstance(r, Fetched)
            }
            derived = derive(contract, tf, parts, rows, complete_from)
            message = BackfillBars(contract, tf.name, derived, since=complete_from, cut=cut)
        await bars.tell(message)
        self.counters["backfills"] += 1
        # A series keeps its want (from ``since``) while it keeps its cut: only a gap
        # changes the want, and a gap gives a new cut.
        if self._cuts.get(key) == cut:
            del self._cuts[key]  # the cut is released, whatever the answer
            if failure is None:
                del self._want[key]  # else a newer cut asks again
                self._done.add(key)
                self._failed.pop(key, None)
                self._retrying.pop(key, None)
            elif failure.kind == "rejected":
                del self._want[key]  # the gateway said no: asking again won't help
                self._failed[key] = str(failure)
                self._retrying.pop(key, None)
            else:
                self._retrying[key] = str(failure)

    def _report(self, stats: Ref[Any]) -> None:
        # Counters are cumulative, so a report lost to a full mailbox loses no count.
        stats.try_tell(CountersReported(source="history", counters=dict(self.counters)))


def _label(key: Series) -> str:
    return f"{key[0]} {key[1].name}"
