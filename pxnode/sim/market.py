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
reads, so REST history is exactly the aggregate of what the hubs sent.
"""

from __future__ import annotations

import bisect
import random
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias

import msgspec

from protocols.gateway import DepthItem, QuoteItem, TradeItem

MEAN_BATCH: Final = 2.5
"""Mean trades per GatewayTrade list (geometric: P(one more) = 1 - 1/MEAN_BATCH)."""
BURST_CHUNK: Final = 500
"""A burst is sent as lists of at most this many trades, all at one instant."""

_MORE: Final = 1.0 - 1.0 / MEAN_BATCH
_SWEEP: Final = 0.25  # P(the next trade of a batch is one tick further through the book)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# DomType of ProjectX depth items.
DOM_ASK, DOM_BID, DOM_BEST_ASK, DOM_BEST_BID, DOM_TRADE = 1, 2, 3, 4, 5
DOM_RESET, DOM_LOW, DOM_HIGH, DOM_NEW_BEST_BID, DOM_NEW_BEST_ASK, DOM_FILL = 6, 7, 8, 9, 10, 11
BUY, SELL = 0, 1
LEVELS: Final = 10
"""Depth price levels per side."""


class ContractSpec(msgspec.Struct, frozen=True):
    """A simulated futures contract; ``weight`` is its share of the trade rate."""

    id: str
    name: str
    description: str
    symbol_id: str
    tick_size: float
    tick_value: float
    start_price: float
    weight: float = 1.0

    @property
    def decimals(self) -> int:
        text = repr(self.tick_size)
        return len(text.partition(".")[2].rstrip("0"))


DEFAULT_CONTRACTS: Final = (
    ContractSpec(
        "CON.F.US.MNQ.Z25", "MNQZ5", "Micro E-mini Nasdaq-100: December 2025",
        "F.US.MNQ", 0.25, 0.5, 21000.0, weight=4.0,
    ),
    ContractSpec(
        "CON.F.US.ENQ.Z25", "NQZ5", "E-mini NASDAQ-100: December 2025",
        "F.US.ENQ", 0.25, 5.0, 21000.0, weight=2.0,
    ),
    ContractSpec(
        "CON.F.US.EP.Z25", "ESZ5", "E-Mini S&P 500: December 2025",
        "F.US.EP", 0.25, 12.5, 6000.0, weight=3.0,
    ),
    ContractSpec(
        "CON.F.US.GCE.G26", "GCG6", "Gold (Globex): February 2026",
        "F.US.GCE", 0.1, 10.0, 4000.0, weight=1.0,
    ),
)  # fmt: skip
MORE_CONTRACTS: Final = tuple(
    ContractSpec(f"CON.F.US.{root}.Z25", f"{root}Z5", f"{root}: December 2025",
                 f"F.US.{root}", tick, value, price)
    for root, tick, value, price in (
        ("MES", 0.25, 1.25, 6000.0), ("M2K", 0.1, 0.5, 2400.0), ("RTY", 0.1, 5.0, 2400.0),
        ("YM", 1.0, 5.0, 47000.0), ("MYM", 1.0, 0.5, 47000.0), ("CLE", 0.01, 10.0, 60.0),
        ("MCLE", 0.01, 1.0, 60.0), ("NGE", 0.001, 10.0, 4.5), ("SIE", 0.005, 25.0, 50.0),
        ("CPE", 0.0005, 12.5, 5.0), ("ZB", 0.03125, 31.25, 117.0), ("ZN", 0.015625, 15.625, 112.0),
        ("6B", 0.0001, 6.25, 1.27), ("6A", 0.0001, 10.0, 0.65), ("MGC", 0.1, 1.0, 4000.0),
        ("HE", 0.025, 10.0, 80.0),
    )
)  # fmt: skip
"""Known to the sim (``SimConfig.contracts`` may name them) but not served by default."""
CONTRACTS: Final = {spec.id: spec for spec in (*DEFAULT_CONTRACTS, *MORE_CONTRACTS)}


def find_contract(name: str) -> str | None:
    """The id of the sim's contract called ``name``: its id, its symbol (MNQ, ES) or its
    name with or without the expiry (MNQZ5, MNQ); None if the sim has no such contract."""
    if name in CONTRACTS:
        return name
    wanted = name.upper()
    for contract_id, spec in CONTRACTS.items():
        symbol = spec.symbol_id.rsplit(".", 1)[-1].upper()
        if wanted in (spec.name.upper(), symbol) or spec.name.upper()[:-2] == wanted:
            return contract_id
    return None


def contract_symbol(contract_id: str) -> str:
    """What a trader calls ``contract_id``: ESZ5 for ``CON.F.US.EP.Z25``.

    The exchange root in an id is the gateway's own (EP, ENQ), not the one traders
    say (ES, NQ); the sim's catalogue holds the gateway's names for the common
    contracts. Any other id gives its root, an id of another shape itself.
    """
    spec = CONTRACTS.get(contract_id)
    if spec is not None:
        return spec.name
    parts = contract_id.split(".")
    return parts[3] if len(parts) == 5 and parts[3] else contract_id


def point_value(contract_id: str) -> float | None:
    """Money per 1.0 of price of ``contract_id`` (tick value / tick size) where the
    catalogue knows it (the gateway's values for these contracts); None elsewhere."""
    spec = CONTRACTS.get(contract_id)
    return None if spec is None else spec.tick_value / spec.tick_size


DEFAULT_START: Final = 1_764_000_000.0
"""2025-11-24T16:00:00Z, a Monday: the start of a sim that is given no clock."""


class SimTrade(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Ground truth of one emitted trade; ``ts`` in µs since the epoch (UTC)."""

    ts: int
    price: float
    volume: int
    side: int


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


class SecondBars:
    """1-second OHLCV aggregates of one contract, kept for ``retention`` seconds.

    Parallel arrays instead of objects: 48 bytes a second, so hours of history
    for several contracts stay a few MiB. ``secs`` is strictly increasing.
    """

    __slots__ = ("c", "h", "l", "o", "retention", "secs", "v")

    def __init__(self, retention: int) -> None:
        self.retention = retention
        self.secs = array("q")
        self.o, self.h, self.l, self.c = array("d"), array("d"), array("d"), array("d")
        self.v = array("q")

    def add(self, sec: int, price: float, volume: int) -> None:
        secs = self.secs
        if secs and secs[-1] == sec:
            self.h[-1] = max(self.h[-1], price)
            self.l[-1] = min(self.l[-1], price)
            self.c[-1] = price
            self.v[-1] += volume
            return
        secs.append(sec)
        for column in (self.o, self.h, self.l, self.c):
            column.append(price)
        self.v.append(volume)
        if secs[0] <= sec - self.retention:
            cut = bisect.bisect_right(secs, sec - self.retention)
            for col in (secs, self.o, self.h, self.l, self.c, self.v):
                del col[:cut]

    @property
    def first(self) -> int | None:
        """The oldest second still held (older sim history has been dropped)."""
        return self.secs[0] if self.secs else None

    def between(self, lo: int, hi: int) -> range:
        """Indices of the seconds in ``[lo, hi)``."""
        return range(bisect.bisect_left(self.secs, lo), bisect.bisect_left(self.secs, hi))


class _Book:
    """Mutable market state of one contract (all prices in ticks)."""

    __slots__ = (
        "asks", "bid", "bids", "decimals", "high", "last", "low", "open", "quote", "ref",
        "seconds", "spec", "stamp", "tape", "tick", "top", "volume",
    )  # fmt: skip

    def __init__(self, spec: ContractSpec, history_seconds: int, truth: int) -> None:
        self.spec = spec
        self.tick = spec.tick_size
        self.decimals = spec.decimals
        start = round(spec.start_price / spec.tick_size)
        self.ref = self.open = self.high = self.low = self.last = start
        self.bid = start - 1
        self.volume = 0
        self.seconds = SecondBars(history_seconds)
        self.tape: deque[SimTrade] = deque(maxlen=truth)
        self.quote: QuoteItem | None = None  # the latest of each, for subscribe snapshots
        self.bids: dict[int, int] = {}  # ticks -> size; empty before the first trade
        self.asks: dict[int, int] = {}
        self.stamp = ""  # of the latest depth update
        self.top = 0  # the bid the ladder was last stacked on

    def price(self, ticks: int) -> float:
        return round(ticks * self.tick, self.decimals)

    def restack(self, stamp: str, rng: random.Random, sizes: tuple[int, int]) -> list[DepthItem]:
        """Move the ladder to the current touch; the depth items of every level that changed.

        The touch takes its new size; deeper levels keep theirs until they leave
        the ladder (sent as volume 0) and get a random one when they join it.
        """
        self.stamp = stamp
        changed: list[DepthItem] = []
        ask = self.bid + 1
        if self.bids and self.top == self.bid:  # the touch held (most batches): resize it
            for side, kind, touch, size in ((self.bids, DOM_BID, self.bid, sizes[0]),
                                            (self.asks, DOM_ASK, ask, sizes[1])):  # fmt: skip
                if side[touch] != size:
                    side[touch] = size
                    changed.append(DepthItem(stamp, kind, self.price(touch), size, size))
            return changed
        self.top = self.bid
        for side, kind, touch, step, size in (
            (self.bids, DOM_BID, self.bid, -1, sizes[0]),
            (self.asks, DOM_ASK, ask, 1, sizes[1]),
        ):
            wanted = range(touch, touch + step * LEVELS, step)
            for ticks in [t for t in side if t not in wanted]:
                del side[ticks]
                changed.append(DepthItem(stamp, kind, self.price(ticks), 0, 0))
            for ticks in wanted:
                if ticks < 1:  # no level at or below a zero price
                    break
                new = size if ticks == touch else side.get(ticks) or rng.randint(1, 80)
                if side.get(ticks) != new:
                    side[ticks] = new
                    changed.append(DepthItem(stamp, kind, self.price(ticks), new, new))
        return changed

    def ladder(self) -> list[DepthItem]:
        """The whole book as depth items: a Reset, asks high to low, bids high to low, the touch."""
        if not self.bids:
            return []
        stamp, price = self.stamp, self.price
        items = [DepthItem(stamp, DOM_ASK, price(t), n, n) for t, n in sorted(self.asks.items())]
        items.append(DepthItem(stamp, DOM_RESET, 0.0, 0, 0))  # reversed below: the Reset leads
        items.reverse()
        items += [
            DepthItem(stamp, DOM_BID, price(t), n, n)
            for t, n in sorted(self.bids.items(), reverse=True)
        ]
        bid, ask = self.bids[self.bid], self.asks[self.bid + 1]
        items.append(DepthItem(stamp, DOM_BEST_BID, price(self.bid), bid, bid))
        items.append(DepthItem(stamp, DOM_BEST_ASK, price(self.bid + 1), ask, ask))
        return items


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
        self._books = {spec.id: _Book(spec, history_seconds, truth) for spec in contracts}
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

    def _batch(self, book: _Book, ts: int, out: list[MarketEvent], size: int) -> None:
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

    def _quote(self, book: _Book, stamp: str, bid: float, ask: float) -> QuoteItem:
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


def contracts_for(ids: Iterable[str]) -> list[ContractSpec]:
    """The specs of ``ids`` (unknown ids raise ``KeyError`` naming them)."""
    specs = []
    for contract in ids:
        if contract not in CONTRACTS:
            raise KeyError(f"unknown contract {contract!r}; known: {', '.join(CONTRACTS)}")
        specs.append(CONTRACTS[contract])
    return specs
