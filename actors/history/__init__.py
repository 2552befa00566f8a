"""The history actor: back-fills bars from History/retrieveBars at start and after every gap.

Theory of operation
-------------------
Live bars are built from trades. Whatever the node did not see (before it
started, while the market hub was down, before a contract or timeframe was
subscribed) comes from the gateway's history, so that every bar, the forming
one included, holds exactly what was traded: history plus live trades, each
counted once.

The seam between the two is the **cut**, a whole second put ``cut_margin``
seconds ahead of the moment the market hub is (again) up, when the live feed
surely flows. The actor tells the bars actor ``BackfillStarted(contract,
timeframes, cut)`` at once; from then on bars keeps the live trades from the
cut on apart. After the cut (plus ``settle``, so that the gateway's bars before
it are final) the actor asks History/retrieveBars for the *source bars* up to
the cut and tells ``BackfillBars(contract, timeframe, bars, since, cut)`` per
series: history is the truth for ``[since, cut)``, the bar straddling the cut
becomes its history part plus the live trades after it, and a live trade
before the cut arriving later is not counted again (see the bars actor).

Source bars are 1sec, 1min and 1hr bars, whose gateway alignment is ours
(floor of UTC time). Every boundary of a frame of an hour or more is a whole
UTC hour (17:00 Chicago is one, on DST days too), so any pxnode bar is tiled by
1hr bars up to the cut's hour, then 1min bars to its minute, then 1sec bars
(``window.segments``). The gateway's own day, week, month and multi-hour bars
are never asked for: they start at 00:00 UTC, not at the session open. One
request per contract and source covers every timeframe (deduplicated); sources
go shortest first, and a timeframe is told as soon as its sources are in.

Two tasks of one actor share its state on one thread, as in auth. The *inbox
loop* follows the market hub through ``Connected``/``Disconnected`` on
``topic.events``, takes run-time subscriptions and answers ``GetBackfill``; it
never waits on HTTP. The *fetcher* makes every HTTP call, one at a time, through
the node's REST budget. Work passes between them as data: ``_want`` (series ->
the bar start history must cover from) and ``_cuts`` (series -> the cut its
back-fill covers up to); an Event wakes the fetcher. State changes only between
awaits, so no lock is needed.

What the inbox loop knows of the market hub (``window.TRANSITIONS``):

=========  ============  ===============================================  =======
state      event         action                                           next
=========  ============  ===============================================  =======
unknown    Connected     gap from the actor's start; new cut              up
unknown    Disconnected  mark: the gap starts now                         down
up         Connected     none                                             up
up         Disconnected  mark: the gap starts now                         down
down       Connected     gap from the mark; new cut                       up
down       Disconnected  none: the earliest mark is kept                  down
=========  ============  ===============================================  =======

A gap from ``t`` wants, per timeframe, the bar before the one containing ``t``
(margin against clocks that disagree); the start-up back-fill wants
``initial_bars`` bars, from far enough back to find them across weekends.
Wants of one series merge to the earliest. A reconnect's cut covers every
wanted series (the round under way is abandoned: the new cut's asks again);
a subscription's covers only the series it adds, and a series waiting for a
cut keeps it, so subscriptions however frequent never postpone a back-fill.
Rounds go one per cut, the oldest first; cuts made within one second are one.

Invariants: a request is delayed by the budget, never failed by it; HTTP 429
is retried until it succeeds or the actor stops (a 429 never uses up the
attempts of other failures); other failures are retried a bounded number of
times, then the series is told an empty back-fill (bars keeps its live bars,
the cut is released) and reported as failed in ``BackfillState`` with one clear
line (e.g. ``errorCode 1 (ContractNotFound)``). A series given up on stays
wanted: the fetcher makes a new cut for it after a growing delay (``refill_min``
to ``refill_max``) or takes the next reconnect's, so a gateway that fails for a
while delays a gap's bars but never loses them; only the gateway's refusal
(``rejected``) is final. The token is only ever put in a header. An answer that
hit ``max_bars`` is counted as ``truncated``: the bars it could not reach are
left to live data.

History bars carry no trade count: ``Bar.trades`` is 0 for them, meaning
"unknown", never "no trades" (their volume is real); their ``source`` is
``"history"``.

``actor`` is HistoryActor (the inbox loop and the fetcher's rounds); ``retrieve``
fetches one source's bars of one contract (the request, one logical retrieveBars
call with its token, budget and retries, each bar's checks, duplicates, an
answer cut short by ``max_bars``);
``window`` is the pure side: the hub-state table, the cut, the segments a bar
is tiled from, the check that turns a source bar into a ``Bar`` and the
derivation of every timeframe; ``config`` is HistoryConfig, the gateway's units
and the counters.
"""

from .actor import HistoryActor as HistoryActor
from .config import COUNTERS as COUNTERS
from .config import HistoryConfig as HistoryConfig

__all__ = ["COUNTERS", "HistoryActor", "HistoryConfig"]
