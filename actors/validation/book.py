"""The order book's side of validation: quotes and depth levels of one admitted frame.

Both follow the same time rules (timestamp, future, too_old, stale against the
newest accepted stamp of their own kind and contract); trades, on the hot path,
are judged in ``actor`` with their own spike rule. The actor decodes a frame and
admits its contract; ``BookJudge`` judges its items and keeps the newest
accepted stamps, keyed only by admitted contracts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from protocols.gateway import DepthItem, DomType, QuoteItem
from protocols.messages import I64_MAX, DepthAccepted, DepthLevel, QuoteAccepted
from protocols.timestamps import TimestampParser

_INF = math.inf
_RESET = int(DomType.RESET)
_DOM_MAX = max(DomType)


class BookJudge:
    """Judges quote and depth items, counting each rejection in ``counts`` by its rule.

    ``limits`` are (max_future, max_age, stale_after) in µs; ``timestamps`` is the
    actor's parser (its caches serve every kind).
    """

    __slots__ = ("_counts", "_depth_newest", "_limits", "_quote_newest", "_timestamps")

    def __init__(
        self, counts: dict[str, int], limits: tuple[int, int, int], timestamps: TimestampParser
    ) -> None:
        self._counts = counts
        self._limits = limits
        self._timestamps = timestamps
        self._quote_newest: dict[str, int] = {}
        self._depth_newest: dict[str, int] = {}

    def quotes(
        self,
        contract: str,
        items: Sequence[QuoteItem],
        received_us: int,
        received_at: float,
        out: list[QuoteAccepted],
    ) -> None:
        counts, newest = self._counts, self._quote_newest
        for quote in items:
            last, bid, ask, volume = quote.last_price, quote.best_bid, quote.best_ask, quote.volume
            stamp: int | str
            if any(p is not None and not 0.0 < p < _INF for p in (last, bid, ask)):
                stamp = "quotes_rejected.price"
            elif volume is not None and not 0 <= volume <= I64_MAX:
                stamp = "quotes_rejected.volume"
            elif bid is not None and ask is not None and bid > ask:
                stamp = "quotes_rejected.crossed"
            else:
                ts = self._time(quote.last_updated, quote.timestamp)
                stamp = self._stamp("quotes", ts, received_us, newest.get(contract))
            if isinstance(stamp, str):
                counts[stamp] += 1
                continue
            newest[contract] = max(stamp, newest.get(contract, stamp))
            counts["quotes_accepted"] += 1
            out.append(
                QuoteAccepted(
                    contract=contract,
                    ts=stamp,
                    received_at=received_at,
                    last=last,
                    bid=bid,
                    ask=ask,
                    volume=volume,
                )
            )

    def depth(
        self,
        contract: str,
        items: Sequence[DepthItem],
        received_us: int,
        received_at: float,
        out: list[DepthAccepted],
    ) -> None:
        counts = self._counts
        levels: list[DepthLevel] = []
        newest = self._depth_newest.get(contract)
        # A message's levels mostly share one stamp: a text equal to the one judged just
        # before gets its verdict again (exact: in between, ``newest`` moved at most to
        # that very stamp; a reset, judged apart, forgets it).
        last_text: object = None
        last_stamp: int | str = ""
        for item in items:
            stamp: int | str
            if item.type == _RESET:  # clears the book: its price and volumes mean nothing
                last_text = None
                stamp = self._stamp("depth", self._time(item.timestamp), received_us, newest)
                if isinstance(stamp, int):
                    newest = stamp if newest is None else max(newest, stamp)
                    levels.append(DepthLevel(stamp, _RESET, 0.0, 0, 0))
                    continue
            elif not 0.0 < item.price < _INF:
                stamp = "depth_rejected.price"
            elif not (0 <= item.volume <= I64_MAX and 0 <= item.current_volume <= I64_MAX):
                stamp = "depth_rejected.volume"
            elif not 0 <= item.type <= _DOM_MAX:
                stamp = "depth_rejected.type"
            elif (text := item.timestamp) is not None and text == last_text:
                stamp = last_stamp
            else:
                stamp = last_stamp = self._stamp("depth", self._time(text), received_us, newest)
                last_text = text
            if isinstance(stamp, str):
                counts[stamp] += 1
                continue
            newest = stamp if newest is None else max(newest, stamp)
            levels.append(
                DepthLevel(stamp, item.type, item.price, item.volume, item.current_volume)
            )
        if levels:
            assert newest is not None  # an accepted level set it
            self._depth_newest[contract] = newest
            counts["depth_accepted"] += len(levels)
            out.append(DepthAccepted(contract=contract, received_at=received_at, levels=levels))

    def _time(self, *texts: str | None) -> int | None:
        """An item's time: the latest of its stamps; None if it has none, or one does not parse.

        A quote has two: the live gateway's ``timestamp`` may lag ``lastUpdated`` by
        hours (a quote updated at 23:40:39Z said 20:53:40Z), and the quote is as new as
        its later stamp.
        """
        later: int | None = None
        for text in texts:
            if text is not None:
                ts = self._timestamps.parse(text)
                if ts is None:
                    return None
                later = ts if later is None else max(later, ts)
        return later

    def _stamp(self, kind: str, ts: int | None, received_us: int, newest: int | None) -> int | str:
        """The time rules for quotes and depth: the item's ts, or the failing rule's counter key."""
        max_future, max_age, stale = self._limits
        if ts is None:
            return f"{kind}_rejected.timestamp"
        if ts > received_us + max_future:
            return f"{kind}_rejected.future"
        if ts < received_us - max_age:
            return f"{kind}_rejected.too_old"
        if newest is not None and ts < newest - stale:
            return f"{kind}_rejected.stale"
        return ts
