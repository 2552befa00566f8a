"""The seeded market: a pure generator of trades, quotes and depth.

Theory of operation
-------------------
Time is an argument, never read: ``advance(t)`` emits every event scheduled at or
before ``t`` (unix seconds) and stops. The hub driver calls it with wall time, a
test with whatever it likes. Trade batches arrive as one Poisson process over all
contracts (``rate / MEAN_BATCH`` batches per second); the next arrival is drawn
when the previous one is emitted, so the event sequence depends on the seed alone,
never on how finely ``advance`` is called.

Prices live in integer ticks, so every price is on the grid; the wire price is
ticks * tick size rounded to the tick's decimals (3 ticks of 0.1 must print as 0.3).

Depth is a ladder of ``LEVELS`` price levels a side around the touch. Each batch
sends what changed: a level that left the book goes out with volume 0 (the
gateway's "delete this price"), a new or resized level with its size, then the
best bid and ask. A client that applies updates by price (as the SDKs' order
books do) therefore always holds the sim's book, never a crossed one.

Each emitted trade also lands in two bounded records: ``recent_trades`` (ground
truth for tests) and 1-second OHLCV aggregates, the source History/retrieveBars
reads, so REST history is exactly the aggregate of what the hubs sent. The ladder
and both records are each contract's ``book.Book``; this module decides what trades.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias

import msgspec

from protocols.gateway import DepthItem, QuoteItem, TradeItem
from pxnode.sim.book import (
    DOM_BEST_ASK,
    DOM_BEST_BID,
    DOM_FILL,
    DOM_HIGH,
    DOM_LOW,
    DOM_NEW_BEST_ASK,
    DOM_NEW_BEST_BID,
    DOM_TRADE,
    Book,
    SecondBars,
    SimTrade,
)
from pxnode.sim.contracts import DEFAULT_CONTRACTS, ContractSpec

MEAN_BATCH: Final = 2.5
"""Mean trades per GatewayTrade list (geometric: P(one more) = 1 - 1/MEAN_BATCH)."""
BURST_CHUNK: Final = 500
"""A burst is sent as lists of at most this many trades, all at one instant."""

_MORE: Final = 1.0 - 1.0 / MEAN_BATCH
_SWEEP: Final = 0.25  # P(the next trade of a batch is one tick further through the book)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
BUY, SELL = 0, 1

DEFAULT_START: Final = 1_764_000_000.0
"""2025-11-24T16:00:00Z, a Monday: the start of a sim that is given no clock."""


class TradesEmitted(msgspec.Struct, frozen=True, gc=False):
    contract: str
    ts: int
    trades: list[TradeItem]


class QuoteEmitted(msgspec.Struct, frozen=True, gc=False):
    contract: str
    ts: int
    quote: QuoteItem


class DepthEmitted(msgspec.Struct, frozen=True, gc=False):
    contract: str
    ts: int
    levels: list[DepthItem]


MarketEvent: TypeAlias = TradesEmitted | QuoteEmitted | DepthEmitted


def iso(ts_us: int) -> str:
    """``ts_us`` as ISO 8601 with milliseconds and an explicit offset, as the gateway writes it."""
    return (_EPOCH + timedelta(microseconds=ts_us)).isoformat(timespec="milliseconds")


def parse_time(text: str) -> int:
    """ISO 8601 → µs since the epoch; no offset means UTC. Raises ``ValueError``."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class MarketSim:
    """Deterministic random-walk market for ``contracts``, ``rate`` trades/s in total.

    ``history_seconds`` bounds the 1-second aggregates and ``truth`` the per-contract
    ground-truth tape (``recent_trades``); both are memory caps, nothing else.
    """

    def __init__(
        self,
        seed: int,
        contracts: Sequence[ContractSpec] = DEFAULT_CONTRACTS,
        rate: float = 200.0,
        *,
        start: float = DEFAULT_START,
        history_seconds: int = 6 * 3600,
        truth: int = 100_000,
    ) -> None:
        if not contracts:
            raise ValueError("a market needs at least one contract")
        if not rate > 0:
            raise ValueError(f"rate must be a positive number of trades/s, got {rate!r}")
        self.seed = seed
        self.rate = rate
        self.start = start
        self._rng = random.Random(seed)
        self._books = {spec.id: Book(spec, history_seconds, truth) for spec in contracts}
        self._order = list(self._books.values())
        weights = [spec.weight for spec in contracts]
        self._cum = [sum(weights[: i + 1]) for i in range(len(weights))]
        self._batch_rate = rate / MEAN_BATCH
        self.now = start
        self._next_at = start + self._rng.expovariate(self._batch_rate)
        self.emitted = 0

    def __contains__(self, contract: object) -> bool:
        return contract in self._books

    @property
    def contracts(self) -> list[ContractSpec]:
        return [book.spec for book in self._order]

    def last_price(self, contract: str) -> float:
        book = self._books[contract]
        return book.price(book.last)

    @property
    def next_at(self) -> float:
        """When the next trade batch is due (unix seconds)."""
        return self._next_at

    def advance(self, to_time: float) -> list[MarketEvent]:
        """Every event due in ``(now, to_time]``, in order; the clock never goes back."""
        out: list[MarketEvent] = []
        rng, choose = self._rng, self._rng.choices
        while self._next_at <= to_time:
            book = choose(self._order, cum_weights=self._cum)[0]
            self._batch(book, int(self._next_at * 1000) * 1000, out, 0)
            self._next_at += rng.expovariate(self._batch_rate)
        self.now = max(self.now, to_time)
        return out

    def skip_to(self, to_time: float) -> None:
        """Nothing trades before ``to_time``: the market was not watched (its driver fell
        behind wall time), and what was due then is never emitted, nor recorded."""
        if self._next_at < to_time:
            self._next_at = to_time + self._rng.expovariate(self._batch_rate)
        self.now = max(self.now, to_time)

    def burst(self, count: int) -> list[MarketEvent]:
        """``count`` trades at the current instant, in lists of up to ``BURST_CHUNK``."""
        out: list[MarketEvent] = []
        ts = int(self.now * 1000) * 1000
        rng = self._rng
        while count > 0:
            book = rng.choices(self._order, cum_weights=self._cum)[0]
            size = min(count, BURST_CHUNK)
            self._batch(book, ts, out, size)
            count -= size
        return out

    def recent_trades(
        self, contract: str, since: float | None = None, until: float | None = None
    ) -> list[SimTrade]:
        """Ground truth: emitted trades of ``contract`` with ``since <= t < until`` (seconds)."""
        lo = -1 if since is None else since * 1e6
        hi = float("inf") if until is None else until * 1e6
        return [t for t in self._books[contract].tape if lo <= t.ts < hi]

    def quote(self, contract: str) -> QuoteItem:
        """The latest quote of ``contract`` (a fresh one before its first trade)."""
        book = self._books[contract]
        if book.quote is None:
            stamp = iso(int(self.now * 1000) * 1000)
            book.quote = self._quote(book, stamp, book.price(book.bid), book.price(book.bid + 1))
        return book.quote

    def depth(self, contract: str) -> list[DepthItem]:
        """The whole book of ``contract`` as depth items (empty before its first trade)."""
        return self._books[contract].ladder()

    def seconds(self, contract: str) -> SecondBars:
        return self._books[contract].seconds

    # --------------------------------------------------------------- internals

    def _batch(self, book: Book, ts: int, out: list[MarketEvent], size: int) -> None:
        """One GatewayTrade list (``size`` trades, or a geometric number when 0)."""
        rng = self._rng
        r = rng.random()
        # The mid walks one tick at a time, pulled gently back to where it started.
        pull = 0.05 * max(-1.0, min(1.0, (book.bid - book.ref) / 4000))
        if r < 0.2 - pull:
            book.bid += 1
        elif r < 0.4:
            book.bid -= 1
        book.bid = max(book.bid, 2)
        side = BUY if rng.random() < 0.5 else SELL
        ticks = book.bid + 1 if side == BUY else book.bid
        step = 1 if side == BUY else -1
        stamp = iso(ts)
        spec, sec, tape, seconds = book.spec, ts // 1_000_000, book.tape, book.seconds
        high, low, first, top = book.high, book.low, ticks, book.top
        items: list[TradeItem] = []
        total = 0
        while True:
            volume = 1
            while rng.random() < 0.45:
                volume += 1
            price = book.price(ticks)
            items.append(TradeItem(spec.symbol_id, price, stamp, side, volume))
            tape.append(SimTrade(ts, price, volume, side))
            seconds.add(sec, price, volume)
            total += volume
            book.high = max(book.high, ticks)
            book.low = min(book.low, ticks)
            book.last = ticks
            if (len(items) >= size) if size else rng.random() >= _MORE:
                break
            if rng.random() < _SWEEP and ticks > 1:
                ticks += step
        book.volume += total
        self.emitted += len(items)
        # A buy sweep lifts offers, a sell sweep hits bids: the touch ends where the tape did.
        book.bid = ticks - 1 if side == BUY else ticks
        bid, ask = book.price(book.bid), book.price(book.bid + 1)
        bid_size, ask_size = rng.randint(1, 60), rng.randint(1, 60)
        book.quote = self._quote(book, stamp, bid, ask)
        levels = [DepthItem(stamp, DOM_TRADE, book.price(ticks), total, total)]
        if ticks != first:  # a sweep: its fill at the far price
            levels.append(DepthItem(stamp, DOM_FILL, book.price(ticks), volume, volume))
        if book.high > high:
            levels.append(DepthItem(stamp, DOM_HIGH, book.price(book.high), 0, 0))
        if book.low < low:
            levels.append(DepthItem(stamp, DOM_LOW, book.price(book.low), 0, 0))
        levels += book.restack(stamp, rng, (bid_size, ask_size))
        moved = book.top != top
        best_bid, best_ask = (
            (DOM_NEW_BEST_BID, DOM_NEW_BEST_ASK) if moved else (DOM_BEST_BID, DOM_BEST_ASK)
        )
        levels.append(DepthItem(stamp, best_bid, bid, bid_size, bid_size))
        levels.append(DepthItem(stamp, best_ask, ask, ask_size, ask_size))
        out.append(TradesEmitted(spec.id, ts, items))
        out.append(QuoteEmitted(spec.id, ts, book.quote))
        out.append(DepthEmitted(spec.id, ts, levels))

    def _quote(self, book: Book, stamp: str, bid: float, ask: float) -> QuoteItem:
        last, ref = book.price(book.last), book.price(book.ref)
        change = book.price(book.last - book.ref)
        return QuoteItem(
            symbol=book.spec.symbol_id,
            symbol_name="/" + book.spec.symbol_id.rpartition(".")[2],
            last_price=last,
            best_bid=bid,
            best_ask=ask,
            change=change,
            change_percent=round(100.0 * change / ref, 4),
            open=book.price(book.open),
            high=book.price(book.high),
            low=book.price(book.low),
            volume=book.volume,
            last_updated=stamp,
            timestamp=stamp,
        )
