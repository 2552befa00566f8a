"""The bounded stores behind rates and latency quantiles.

Each is a fixed-size array whatever the input: a rate is a ring of bucket
increases, a latency window a dense log-scale histogram (the DDSketch mapping),
so a source that reports a million samples costs what one costs in memory.
"""

from __future__ import annotations

import math
from array import array

from protocols.stats import LatencySummary

# ------------------------------------------------------------------ rates


class RateWindow:
    """Increases of one counter in a ring of ``n`` buckets of equal width.

    Invariant: ``buckets[e % n]`` holds the increase during bucket epoch ``e`` for
    ``head - n < e <= head``; buckets of older epochs have been zeroed. The rate
    uses only completed buckets (all but ``head``), so it is exact for a steady
    flow and lags by at most one bucket.
    """

    __slots__ = ("born", "buckets", "head")

    def __init__(self, n: int, epoch: int) -> None:
        self.buckets = [0] * n
        self.head = epoch
        self.born = epoch

    def _advance(self, epoch: int) -> None:
        n = len(self.buckets)
        for e in range(self.head + 1, min(epoch, self.head + n) + 1):
            self.buckets[e % n] = 0
        self.head = max(self.head, epoch)

    def add(self, epoch: int, increase: int) -> None:
        self._advance(epoch)
        self.buckets[epoch % len(self.buckets)] += increase

    def rate(self, epoch: int, width: float) -> float:
        self._advance(epoch)
        completed = min(epoch - self.born, len(self.buckets) - 1)
        if completed <= 0:
            return 0.0
        return (sum(self.buckets) - self.buckets[epoch % len(self.buckets)]) / (completed * width)


# -------------------------------------------------------------- latencies


class LogScale:
    """Log-spaced buckets shared by all latency series (the DDSketch mapping).

    Bucket ``i`` holds values in (gamma**(i-1), gamma**i]; reporting
    2*gamma**i/(gamma+1) for any of them is off by at most
    alpha = (gamma-1)/(gamma+1) relative. Values outside [low, high] share the
    edge buckets, so the bound holds inside that range and a window is a dense
    array of ``size`` counts: log(high/low)/log(gamma) + 2, ~1,150 for
    1 µs..10⁴ s at 1 %.
    """

    def __init__(self, alpha: float, low: float, high: float) -> None:
        self._gamma = (1 + alpha) / (1 - alpha)
        self._log_gamma = math.log(self._gamma)
        self._low = low
        self._lowest = math.ceil(math.log(low) / self._log_gamma)
        self.size = math.ceil(math.log(high) / self._log_gamma) - self._lowest + 1

    def offset(self, value: float) -> int:
        if value <= self._low:
            return 0
        index = math.ceil(math.log(value) / self._log_gamma) - self._lowest
        return min(index, self.size - 1)

    def value(self, offset: int) -> float:
        return 2 * self._gamma ** (offset + self._lowest) / (self._gamma + 1)


class _Window:
    __slots__ = ("counts", "high", "low", "n")

    def __init__(self, size: int) -> None:
        self.counts = array("Q", bytes(8 * size))  # flat: no int object per bucket
        self.n = 0
        self.low = math.inf
        self.high = -math.inf


class LatencySeries:
    """Lifetime count and sum; quantiles over the current and the previous window."""

    __slots__ = ("count", "current", "previous", "total")

    def __init__(self, size: int) -> None:
        self.count = 0
        self.total = 0.0
        self.current = _Window(size)
        self.previous = _Window(size)

    def add(self, scale: LogScale, value: float) -> None:
        self.count += 1
        self.total += value
        w = self.current
        w.counts[scale.offset(value)] += 1
        w.n += 1
        w.low = min(w.low, value)
        w.high = max(w.high, value)

    def rotate(self) -> None:
        self.previous, self.current = self.current, _Window(len(self.current.counts))

    def summary(self, scale: LogScale) -> LatencySummary:
        cur, prev = self.current, self.previous
        n = cur.n + prev.n
        if n == 0:
            return LatencySummary(self.count, self.total, 0, 0.0, 0.0, 0.0)
        counts = [a + b for a, b in zip(cur.counts, prev.counts, strict=True)]
        low, high = min(cur.low, prev.low), max(cur.high, prev.high)

        def quantile(q: float) -> float:
            rank, seen = q * (n - 1), 0
            for offset, c in enumerate(counts):
                seen += c
                if seen > rank:
                    return min(max(scale.value(offset), low), high)
            return high  # unreachable: seen reaches n > rank

        return LatencySummary(self.count, self.total, n, quantile(0.5), quantile(0.99), high)
