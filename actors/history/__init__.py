"""The history actor: back-fills bars from History/retrieveBars at start and after every gap.

Theory of operation
-------------------
Live bars are built from trades. Whatever the node did not see (before it
started, while the market hub was down) comes from the gateway's history:
closed bars only (``includePartialBar: false``), told to the bars actor as one
``BackfillBars`` per contract x timeframe. The bars actor merges without
duplicates and lets a live bar win, so asking for a little more than is missing
is always safe, and asking for less loses bars.

Two tasks of one actor share its state on one thread, as in auth. The *inbox
loop* follows the market hub through ``Connected``/``Disconnected`` on
``topic.events`` and never waits on HTTP, so the topic never backs up behind a
slow gateway. The *fetcher* makes every HTTP call, one at a time. Work passes
between them as data, ``_initial`` (the start-up back-fill is due) and
``_gap_from`` (the earliest unix time whose bars may be missing), and an Event
wakes the fetcher. State changes only between awaits, so no lock is needed.

What the inbox loop knows of the market hub (``window.TRANSITIONS``):

=========  ============  ===============================================  =======
state      event         action                                           next
=========  ============  ===============================================  =======
unknown    Connected     gap from the actor's start                       up
unknown    Disconnected  mark: the gap starts now                         down
up         Connected     none                                             up
up         Disconnected  mark: the gap starts now                         down
down       Connected     gap from the mark                                up
down       Disconnected  none: the earliest mark is kept                  down
=========  ============  ===============================================  =======

``unknown`` is the start. The start-up back-fill reaches only to the moment it
is made; a hub that connects later leaves the bars in between to nobody, hence
the first Connected asks for the gap since the start. A Disconnected first
means the hub was already up, and live trades covered everything until then.

Invariants: gaps coalesce (one queued while the fetcher is busy merges with
the next into one, from the earliest time); a failed request is retried a
bounded number of times, then counted and skipped, never raised (the live feed
matters more than history); the token is only ever put in a header.

A gap from ``t`` asks, per timeframe, for ``[start of the bar before the bar
containing t, now)``: the bar open at ``t`` was built live only in part, the
one before is margin against clocks that disagree. At most ``max_bars`` come
back, the newest; an outage longer than that is counted as ``truncated``.
The start-up back-fill asks for the newest ``initial_bars``, from far enough
back to find that many bars of a market that closes on weekends and holidays.

History bars carry no trade count: ``Bar.trades`` is 0 for them, meaning
"unknown", never "no trades" (their volume is real).

``actor`` is HistoryActor (the inbox loop, the fetcher and its REST calls);
``window`` is the pure side: the hub-state table, the window each request asks
for and the check that turns a history bar into a ``Bar``; ``config`` is
HistoryConfig, the gateway's units and the counters.
"""

from .actor import HistoryActor as HistoryActor
from .config import COUNTERS as COUNTERS
from .config import HistoryConfig as HistoryConfig

__all__ = ["COUNTERS", "HistoryActor", "HistoryConfig"]
