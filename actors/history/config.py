"""What the history actor back-fills and how hard it tries, the gateway's units, the counters.

The unit tables live here because they are fixed by the timeframe names the
config accepts: every unit ``parse_timeframe`` knows has a row in each.
"""

from __future__ import annotations

from typing import Final

import msgspec

from protocols import gateway as gw
from protocols import rest
from protocols.checks import non_negative, positive
from protocols.errors import ConfigError
from protocols.timeframes import parse_timeframe

UNITS: Final = {
    "sec": gw.BarUnit.SECOND,
    "min": gw.BarUnit.MINUTE,
    "hr": gw.BarUnit.HOUR,
    "day": gw.BarUnit.DAY,
    "week": gw.BarUnit.WEEK,
    "month": gw.BarUnit.MONTH,
}
"""The gateway's ``unit`` per timeframe unit; ``unitNumber`` is the timeframe's N."""

# Longest length of one bar per unit, in µs (a month is at most 31 days, a DST day 25 h).
LONGEST_US: Final = {
    "sec": 1_000_000,
    "min": 60_000_000,
    "hr": 3_600_000_000,
    "day": 25 * 3_600_000_000,
    "week": 7 * 86_400_000_000 + 3_600_000_000,
    "month": 31 * 86_400_000_000 + 3_600_000_000,
}


REJECTS: Final = ("malformed", "time", "price", "volume", "unaligned", "partial", "duplicate")
"""Why one history bar was dropped: not a bar; ``t`` unreadable or before the window
asked for; prices not finite, not positive or not low <= open, close <= high; volume
negative or beyond int64; start not on a bar boundary of the timeframe; a bar not
closed at the end of the window (the live bar is built from trades); a second bar of
one start in an answer (the first is kept: summed, they were counted twice)."""

COUNTERS: Final = (
    "requests",  # HTTP requests sent, retries included
    "bars_received",  # history bars in answers, before rejections
    "backfills",  # BackfillBars told to the bars actor
    "gaps",  # gaps of the market hub to fill in (coalesced while waiting)
    "cuts",  # BackfillStarted rounds: a new cut for every pending series
    "refills",  # cuts made to try again a back-fill given up on (no reconnect)
    "truncated",  # answers that hit max_bars: the oldest bars asked for stay missing
    *(f"failures_{kind}" for kind in rest.FAILURES),  # why a request was given up
    *(f"bars_rejected_{reason}" for reason in REJECTS),
)


class HistoryConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What to back-fill and how hard to try; invalid values raise ``ConfigError``.

    ``contracts`` are contract ids; ``timeframes`` pxnode names (``"1min"``,
    ``"4hr"``), the same the bars actor builds. ``initial_bars`` bars per
    contract x timeframe are fetched at start (0: only the bars the node is in);
    ``max_bars`` is the gateway's limit per request (20000 for ProjectX).
    ``cut_margin``: the cut is put at least this far ahead of the moment the
    market hub is up (live trades surely flow from it on, even from a clock a
    few seconds ahead); ``settle``: the requests wait this long after the
    gateway's clock passed the cut (a live trade at or after it came back), so
    that its last bars before it are final; ``max_clock_lag``: how long after
    the cut, by the node's clock, they wait at most for such a trade (a quiet
    market sends none; a gateway clock further behind loses the cut's last
    seconds).
    ``min_lookback`` (seconds) is how far back the start-up request reaches at
    least, so that the last bars are found across a long weekend. ``live`` is
    the gateway's flag (live rather than simulated-account data).

    Times are seconds. Retries cover 429 (waiting ``Retry-After``, capped at
    ``retry_after_max``), 5xx, timeouts and transport errors, with backoff from
    ``backoff_min`` doubling to ``backoff_max``, shortened by up to
    ``backoff_jitter`` (a fraction), ``max_attempts`` calls in all.
    ``token_timeout`` bounds the wait for auth (a login can take its retries).
    A back-fill given up on (its series told empty, so bars keeps its live bars)
    stays wanted and is tried again with a new cut after ``refill_min`` doubling
    to ``refill_max`` while the hub is up, or with the next reconnect's cut;
    only a gateway's refusal (``rejected``: an errorCode, HTTP 4xx) is final.
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
    cut_margin: float = 6.0
    settle: float = 2.0
    max_clock_lag: float = 10.0
    refill_min: float = 5.0
    refill_max: float = 300.0

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
            # Not shown: a value that is no URL may be a secret in the wrong setting.
            raise ConfigError("history: api_url must be an http(s) URL (the value is not shown)")
        if not 60 <= self.max_bars <= 1_000_000:
            raise ConfigError(f"history: max_bars must be in 60..1000000, got {self.max_bars}")
        if not 0 <= self.initial_bars <= self.max_bars:
            raise ConfigError(
                f"history: initial_bars must be in 0..max_bars ({self.max_bars}), "
                f"got {self.initial_bars}"
            )
        if not 1 <= self.max_attempts <= 100:
            raise ConfigError(f"history: max_attempts must be in 1..100, got {self.max_attempts}")
        for name in ("min_lookback", "retry_after_max", "cut_margin", "settle", "max_clock_lag"):
            non_negative(f"history: {name}", getattr(self, name))
        for name in (
            "request_timeout",
            "token_timeout",
            "backoff_min",
            "backoff_max",
            "refill_min",
            "refill_max",
        ):
            positive(f"history: {name}", getattr(self, name))
        if self.backoff_min > self.backoff_max:
            raise ConfigError("history: backoff_min must not exceed backoff_max")
        if self.refill_min > self.refill_max:
            raise ConfigError("history: refill_min must not exceed refill_max")
        if not 0 <= self.backoff_jitter < 1:
            raise ConfigError(
                f"history: backoff_jitter must be in [0, 1), got {self.backoff_jitter}"
            )
