"""Where a batch's accepted items go, and how: backpressure without a yield per message.

Accepted trades of a batch go as one ``TradesAccepted`` to ``bars`` and
``topic.trades`` (awaited: backpressure, never a lost accepted trade); accepted
quotes of a batch as one ``QuotesAccepted`` to ``topic.quotes``; accepted depth
frames of a batch as one ``DepthsAccepted`` to ``topic.depth``; user-hub frames
unchanged to ``topic.user``.
"""

from __future__ import annotations

from protocols.interfaces import ActorContext, tell_when_room
from protocols.messages import (
    DepthAccepted,
    DepthsAccepted,
    HubMessageReceived,
    QuoteAccepted,
    QuotesAccepted,
    Trade,
    TradesAccepted,
)


class Outbox:
    """What the current batch let through, per destination, until ``send`` tells it.

    Accepted trades go as one ``TradesAccepted``, told with a plain (awaited)
    ``tell``: a scheduling point per batch, so the consumers drain between two
    batches. Quotes go as one ``QuotesAccepted``, depth as one ``DepthsAccepted``,
    user frames one message each; these are told without a scheduling point
    while their mailbox has room: an awaited tell yields, and every yield would
    wake a consumer for a single message.
    """

    __slots__ = ("_refs", "depth", "quotes", "trades", "user")

    def __init__(self, ctx: ActorContext) -> None:
        self._refs = tuple(
            ctx.ref(name)
            for name in ("bars", "topic.trades", "topic.quotes", "topic.depth", "topic.user")
        )
        self.trades: list[Trade] = []
        self.quotes: list[QuoteAccepted] = []
        self.depth: list[DepthAccepted] = []
        self.user: list[HubMessageReceived] = []

    async def send(self) -> None:
        bars, trades_topic, quotes_topic, depth_topic, user_topic = self._refs
        if self.trades:
            accepted = TradesAccepted(trades=self.trades)
            self.trades = []
            await bars.tell(accepted)
            await trades_topic.tell(accepted)
        if self.quotes:
            quotes = QuotesAccepted(quotes=self.quotes)
            self.quotes = []
            await tell_when_room(quotes_topic, quotes)
        if self.depth:
            depths = DepthsAccepted(depths=self.depth)
            self.depth = []
            await tell_when_room(depth_topic, depths)
        for frame in self.user:
            await tell_when_room(user_topic, frame)
        self.user.clear()
