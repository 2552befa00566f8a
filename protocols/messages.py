"""Messages between actors: frozen, tagged msgspec Structs.

Names are verb-noun commands (``SubscribeContract``) or past-tense facts
(``BarClosed``). Messages live in ``protocols`` so an actor never needs to import
another actor to talk to it: the data path and supervision here, hub commands
and events in ``protocols.hubs``, health's in ``protocols.health``.

Times: ``received_at`` and ``now`` are unix seconds (float) as seen by the
receiving node (virtual in replay); exchange timestamps (``ts``, ``start``) are
integer microseconds since the unix epoch, UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import msgspec

from protocols.mailboxes import MailboxStatistics
from protocols.secrets import Secret


class Message(msgspec.Struct, frozen=True, tag=True):
    """Base of every actor message."""


# --------------------------------------------------------------------- runtime


class Request(Message, frozen=True):
    """An ``ask``: ``body`` is the question, ``reply`` a one-shot ``Ref``-like channel.

    The actor answers with ``request.reply.tell_nowait(answer)``; the runtime
    wraps and unwraps it, so ordinary messages pay nothing for ask support.
    """

    body: Any
    reply: Any


class Tick(Message, frozen=True):
    """The clock moved to ``now``: close whatever is due (bars, stale checks)."""

    now: float


class Stop(Message, frozen=True):
    """Finish the current work, flush, and return from ``run``."""


class Flush(Message, frozen=True):
    """A barrier, asked (``Request(body=Flush())``): the reply comes only after every
    message queued before it was handled and its results were told downstream.

    The reply is the actor's cumulative counters (``dict[str, int]``). Replay uses
    it to know the pipeline is empty; an embedding app can use it the same way.
    """


class PlayTape(Message, frozen=True):
    """Asked of a tape node's player (``node.play()``): play the tape; the reply,
    ``TapePlayed``, comes once every line is judged and every bar is final."""


class TapePlayed(Message, frozen=True):
    """A tape played to its end: its records (non-blank lines), the malformed among
    them, and validation's cumulative counters at the end."""

    lines: int
    malformed: int
    counters: dict[str, int]


# -------------------------------------------------------------- supervision


ExitReason = Literal["normal", "failed", "cancelled"]
BreakerState = Literal["closed", "open", "half_open"]


class ChildStarted(Message, frozen=True):
    supervisor: str
    child: str
    incarnation: int


class ChildExited(Message, frozen=True):
    supervisor: str
    child: str
    reason: ExitReason
    error: str | None = None


class ChildRestarting(Message, frozen=True):
    supervisor: str
    child: str
    attempt: int
    delay: float


class ChildHealthy(Message, frozen=True):
    supervisor: str
    child: str


class SupervisorEscalated(Message, frozen=True):
    supervisor: str
    reason: str


class BreakerTransitioned(Message, frozen=True):
    supervisor: str
    child: str
    old: BreakerState
    new: BreakerState
    cooldown: float = 0.0


SupervisionEvent = (
    ChildStarted
    | ChildExited
    | ChildRestarting
    | ChildHealthy
    | SupervisorEscalated
    | BreakerTransitioned
)


# ------------------------------------------------------------------ data path


class HubMessageReceived(Message, frozen=True):
    """One invocation as the gateway sent it; ``arguments`` is the raw JSON array."""

    hub: Literal["market", "user"]
    target: str
    arguments: msgspec.Raw
    received_at: float


class HubMessagesReceived(Message, frozen=True):
    """Several hub invocations in arrival order, judged exactly as if told one by one.

    A live connection tells each frame as it comes; replay has a whole tape at
    hand and tells the frames of one tape second at once, so the mailbox hop is
    paid per second of tape instead of per frame.
    """

    messages: list[HubMessageReceived]


I64_MAX: Final = 2**63 - 1
"""The largest volume a trade or bar carries: volumes travel and are written as int64
(bars, Parquet, CSV readers, NATS)."""


class Trade(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One accepted trade (not a message on its own; travels in ``TradesAccepted``)."""

    contract: str
    ts: int
    price: float
    volume: int
    side: int
    received_at: float


class TradesAccepted(Message, frozen=True):
    """Trades that passed validation, in arrival order."""

    trades: list[Trade]


class QuoteAccepted(Message, frozen=True):
    """One accepted quote (travels in ``QuotesAccepted``); a field the gateway left out is None."""

    contract: str
    ts: int
    received_at: float
    last: float | None = None
    bid: float | None = None
    ask: float | None = None
    volume: int | None = None


class QuotesAccepted(Message, frozen=True):
    """Quotes that passed validation, in arrival order."""

    quotes: list[QuoteAccepted]


class DepthLevel(msgspec.Struct, frozen=True, array_like=True, gc=False):
    ts: int
    type: int
    price: float
    volume: int
    current_volume: int


class DepthAccepted(Message, frozen=True):
    """One accepted depth frame (travels in ``DepthsAccepted``) with its accepted levels."""

    contract: str
    received_at: float
    levels: list[DepthLevel]


class DepthsAccepted(Message, frozen=True):
    """Depth frames that passed validation, in arrival order."""

    depths: list[DepthAccepted]


class GetContracts(Message, frozen=True):
    """Ask validation: ``dict[contract, ContractSummary]`` of every contract with trades."""


class ContractSummary(msgspec.Struct, frozen=True):
    last_price: float
    trades: int


# ------------------------------------------------------------------------ bars


BarSource = Literal["live", "history", "merged"]
"""Where a bar's numbers come from: ``live`` trades only, the gateway's ``history`` only,
or ``merged``: history up to the back-fill's cut plus the live trades after it."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class Bar(msgspec.Struct, frozen=True, gc=False):
    """One OHLCV bar; ``start`` is µs UTC (``start_time`` is the same as a datetime).

    ``trades`` is 0 for a history bar (the gateway gives no count: "unknown", not
    "none") and counts only the live part of a merged one; ``source`` says where the
    numbers come from, so a consumer of
    ``stream_bars()`` can skip the back-filled past (``bar.source == "history"``).
    """

    contract: str
    timeframe: str
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    trades: int
    source: BarSource = "live"

    @property
    def start_time(self) -> datetime:
        """The bar's start as an aware UTC datetime."""
        return _EPOCH + timedelta(microseconds=self.start)


class BarUpdated(Message, frozen=True):
    """A bar changed; ``closed`` marks a correction of an already closed bar."""

    bar: Bar
    closed: bool = False


class BarClosed(Message, frozen=True):
    bar: Bar


class TrackTimeframes(Message, frozen=True):
    """Tell bars to build these timeframes too, from now on, for every contract."""

    timeframes: list[str]


class GetBars(Message, frozen=True):
    """Ask bars for the last ``n`` bars as a polars DataFrame (forming bar last)."""

    contract: str
    timeframe: str
    n: int


class BackfillStarted(Message, frozen=True):
    """History will cover ``timeframes`` of ``contract`` up to ``cut`` (µs UTC, exclusive).

    Told before ``cut`` is reached, so the bars actor can keep the live trades
    from ``cut`` on apart: the forming bar becomes history before the cut plus
    those trades, each counted once.
    """

    contract: str
    timeframes: list[str]
    cut: int


class CutPassed(Message, frozen=True):
    """A live trade of ``contract`` at or after ``cut`` reached the bars: the gateway's
    clock has passed the cut, whatever the node's says, so its history before the cut
    can be asked for (after its ``settle``)."""

    contract: str
    cut: int


class BackfillBars(Message, frozen=True):
    """History of ``contract`` x ``timeframe`` for ``[since, cut)``, oldest first.

    Every bar ends at or before ``cut`` except possibly the last, which holds the
    part of its interval before ``cut``. Within ``[since, cut)`` history is the
    truth (live bars there are replaced); trades before ``cut`` arriving later
    are already counted in it. ``cut`` must match the last ``BackfillStarted``.
    """

    contract: str
    timeframe: str
    bars: list[Bar]
    since: int
    cut: int


class GetBackfill(Message, frozen=True):
    """Ask history how far the back-fill is; the reply is a ``BackfillState``."""


class BackfillState(Message, frozen=True):
    """Series (``"<contract> <timeframe>"``) whose history is not in yet (never, or not since
    the last gap); those the gateway refused, why (final); and those pending whose last
    back-fill was given up on, why (tried again)."""

    pending: list[str]
    failed: dict[str, str]
    retrying: dict[str, str] = msgspec.field(default_factory=dict)


# ----------------------------------------------------------------------- stats


class MailboxesSampled(Message, frozen=True):
    """Every mailbox of the node at one instant (the clock sends it to stats each tick)."""

    mailboxes: list[MailboxStatistics]


class CountersReported(Message, frozen=True):
    """Counters of one source; a newer report supersedes an older one.

    ``counters`` are cumulative, so a conflating (DROP_OLDEST) mailbox may drop a
    report without losing a count; ``gauges`` are current values; ``latencies``
    are samples in seconds taken since the previous report (a dropped report
    loses only those). ``source`` has no dot: snapshot keys are "<source>.<name>".
    """

    source: str
    counters: dict[str, int]
    gauges: dict[str, float] = {}
    latencies: dict[str, list[float]] = {}


class GetStats(Message, frozen=True):
    pass


# ------------------------------------------------------------------------ auth


class GetToken(Message, frozen=True):
    """Ask auth for a token; the reply is ``TokenIssued`` or ``AuthFailureReported``.

    Asks that arrive while a login or refresh is under way wait for its result
    instead of starting another, so any number of them cost one HTTP call.
    """


class TokenIssued(Message, frozen=True):
    """A token the gateway accepted, valid until ``expires_at`` (unix seconds, JWT ``exp``).

    Published on ``topic.tokens`` for every new token (hubs reconnect with it)
    and sent as the reply to ``GetToken``. ``token`` is a ``Secret``, so this
    message prints redacted and refuses to be encoded.
    """

    token: Secret
    expires_at: float


class RefreshToken(Message, frozen=True):
    """Get a new token now, e.g. because a hub answered 401 to the current one.

    Ignored while a refresh is already under way or when the current token is
    only seconds old, so two hubs reporting the same 401 cause one login.
    ``logged_out``: the gateway ended the session (``GatewayLogout``); logged out
    again and again, the node logs in less and less often.
    """

    logged_out: bool = False


class AuthFailureReported(Message, frozen=True):
    """Auth could not get a token and is failing; its supervisor decides what next.

    Sent to every waiting ``GetToken`` asker and published on ``topic.tokens``.
    ``reason`` never contains a secret.
    """

    reason: str
