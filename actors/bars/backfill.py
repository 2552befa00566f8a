"""The back-fill side of the bars: history taking a window of a series over, and the cuts.

Apart from the actor because it runs once per back-fill, never per trade, and
reads as its own story (the theory of operation's "History"). The actor owns
the state and hands these functions what they touch; the hot path calls none
of them, it only reads the split points and unpassed cuts that ``recut``
maintains in the actor's dicts.
"""

from __future__ import annotations

import math

from protocols.messages import Bar, BarClosed, BarUpdated, Message
from protocols.timeframes import BarClock

from .book import Agg, Series, by_start, history_agg


def take_history(
    series: Series,
    clock: BarClock,
    bars: list[Bar],
    since: int,
    cut: int,
    deadline: float,
    counters: dict[str, int],
    outbox: list[Message],
) -> float:
    """Make ``[since, cut)`` of the series what history says, then add the tail.

    History bars replace live ones there (live bars there were built from a
    partial view); the bar straddling the cut becomes its history part plus
    the live trades from the cut on. A bar the answer lacks is kept as it
    was: live trades built it, so the answer is incomplete there (its
    trades are in no history bar: a bar holds only trades of its own
    interval, on either side). Trades before the cut that arrive later are
    not counted again (``covered``).

    A history bar ending by ``deadline`` (the clock less the grace, ``-inf``
    before the first tick) is due, as one ending by the cut. Returns the
    earliest end of the history bars left forming (``inf`` if none), for the
    actor's tick scan. The caller tells the pending updates before (bars
    about to be replaced go out as they were first) and recuts the contract
    after (the series' window grew and its cut is gone).
    """
    fresh: dict[int, Agg] = {}
    for bar in bars:
        agg = history_agg(clock, bar)
        if agg is None or not since <= agg.start < cut:
            counters["backfill_rejected"] += 1
        else:
            fresh[agg.start] = agg
    tail = series.tail
    if tail is not None and (part := fresh.get(tail.start)) is not None:
        part.absorb(tail)
        part.source = "merged"  # else the live bar, which holds the tail already, is kept
    series.cover(since, cut)
    series.cut = None
    series.tail = None
    starts = [*series.forming, *(agg.start for agg in series.closed)]
    lacked = [start for start in starts if since <= start < cut and start not in fresh]
    counters["backfill_kept"] += len(lacked)
    for start in [s for s in series.forming if s in fresh]:
        del series.forming[start]  # touched ones were told above; history replaces them
    kept = [agg for agg in series.closed if agg.start not in fresh]
    was_closed = {agg.start for agg in series.closed if agg.start in fresh}
    next_end = math.inf
    closing: list[Agg] = []
    for start in sorted(fresh):
        agg = fresh[start]
        counters["backfill_inserted"] += 1
        if agg.end <= cut or agg.end <= deadline or start in was_closed:
            closing.append(agg)
        else:
            series.forming[start] = agg
            next_end = min(next_end, agg.end)
            outbox.append(BarUpdated(series.bar(agg)))
    ring = series.closed
    ring.clear()
    ring.extend(sorted([*kept, *closing], key=by_start))  # maxlen keeps the newest
    oldest = ring[0].start if ring else cut
    for agg in closing:
        agg.closed = True
        if agg.start < oldest:
            continue  # fell out of a full ring: not kept, not told
        if agg.start in was_closed:
            outbox.append(BarUpdated(series.bar(agg), closed=True))
        else:
            outbox.append(BarClosed(series.bar(agg)))
    return next_end


def recut(
    contract: str,
    book: list[dict[str, Series]],
    cuts: dict[str, list[int]],
    unpassed: dict[str, list[int]],
) -> None:
    """Set the contract's split points: where a history window of one of its series ends
    or a back-fill will cut. No run straddles one, so a run is all history's or all
    live in every series. Only what the series keep is kept (a count of them evicted
    the end of a window whose bar was still forming: its live trades went as history's),
    and only the cuts a series still waits for are waited to be passed (a quiet market
    would pile up the cuts a reconnect or a refill replaced).
    """
    ends: set[int] = set()
    waited: set[int] = set()
    for by_contract in book:
        series = by_contract.get(contract)
        if series is not None:
            ends.update(hi for _, hi in series.covered)
            if series.cut is not None:
                waited.add(series.cut)
    cuts[contract] = sorted(ends | waited)
    pending = unpassed.get(contract)
    if pending:
        pending[:] = [cut for cut in pending if cut in waited]
