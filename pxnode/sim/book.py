"""One contract's book: its depth ladder and the records of what it traded.

Theory of operation
-------------------
``MarketSim`` decides what trades (the random walk, the sweeps); a ``Book`` holds
what follows from it: the touch, the ladder of ``LEVELS`` price levels a side and
the depth items that move it, the quote snapshot, the ground-truth tape and the
1-second aggregates History/retrieveBars reads. Prices are integer ticks here,
converted to the wire's grid only by ``Book.price``.
"""

from __future__ import annotations

import bisect
import random
from array import array
from collections import deque
from typing import Final

import msgspec

from protocols.gateway import DepthItem, QuoteItem
from pxnode.sim.contracts import ContractSpec

# DomType of ProjectX depth items.
DOM_ASK, DOM_BID, DOM_BEST_ASK, DOM_BEST_BID, DOM_TRADE = 1, 2, 3, 4, 5
DOM_RESET, DOM_LOW, DOM_HIGH, DOM_NEW_BEST_BID, DOM_NEW_BEST_ASK, DOM_FILL = 6, 7, 8, 9, 10, 11
LEVELS: Final = 10
"""Depth price levels per side."""


class SimTrade(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Ground truth of one emitted trade; ``ts`` in µs since the epoch (UTC)."""

    ts: int
    price: float
    volume: int
    side: int


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


class Book:
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
