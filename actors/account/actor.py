"""AccountActor: the user hub's events folded into the trader's current state.

The user hub says what changed, never what is: an order event carries the
order's new status, a position event its new size (0: closed), an account event
its new balance. The actor keeps the latest of each, drops orders that stopped
working and positions that closed, and keeps the newest ``max_fills`` fills.
Every change it applied is told to ``topic.account`` as a typed event
(``AccountChanged``, ``PositionChanged``, ``OrderChanged``, ``FillReceived``),
which is what ``node.stream_user`` delivers.

Bounds: ``max_fills`` fills (older ones counted in ``fills_dropped``), and
``max_items`` accounts, positions and working orders each (a new one beyond it
is counted in ``over_bound`` and not kept). A frame that is not a user event of
the documented shape is counted in ``rejected`` and never raised.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

import anyio
import msgspec

from protocols.account import (
    AccountChanged,
    AccountEvent,
    AccountInfo,
    AccountState,
    Fill,
    FillReceived,
    GetAccountState,
    OpenPosition,
    OrderChanged,
    PositionChanged,
    WorkingOrder,
    decode_user_event,
)
from protocols.interfaces import ActorContext, Inbox, optional_ref
from protocols.messages import CountersReported, HubMessageReceived, Request, Stop, Tick

_BATCH = 256
_ARGUMENTS = msgspec.json.Decoder(tuple[msgspec.Raw])
_BAD_FRAME = (msgspec.DecodeError, msgspec.ValidationError, KeyError)


class AccountActor:
    def __init__(self, max_fills: int = 1000, max_items: int = 10_000) -> None:
        self._max_items = max_items
        self._accounts: dict[int, AccountInfo] = {}
        self._positions: dict[tuple[int, str], OpenPosition] = {}
        self._orders: dict[int, WorkingOrder] = {}
        self._fills: deque[Fill] = deque(maxlen=max_fills)
        self.counters: Counter[str] = Counter()

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        topic = ctx.ref("topic.account")
        stats = optional_ref(ctx, "stats")
        ctx.report_healthy()
        while batch := await inbox.receive_batch(_BATCH):
            for msg in batch:
                match msg:
                    case Stop():
                        return
                    case HubMessageReceived(hub="user"):
                        event = self.on_user_event(msg.target, msg.arguments)
                        if event is not None:
                            await topic.tell(event)
                    case Request(body=GetAccountState()):
                        msg.reply.tell_nowait(self.state())
                    case Tick() if stats is not None:
                        stats.try_tell(CountersReported("account", dict(self.counters)))
                    case Tick():
                        pass
                    case _:
                        self.counters["unknown"] += 1
            await anyio.lowlevel.checkpoint()

    def on_user_event(self, target: str, arguments: msgspec.Raw) -> AccountEvent | None:
        """Apply one user-hub invocation; the event to publish, or None if it was refused."""
        try:
            (payload,) = _ARGUMENTS.decode(arguments)
            event = decode_user_event(target, payload)
        except _BAD_FRAME:
            self.counters["rejected"] += 1
            return None
        match event:
            case AccountChanged(account=a):
                kept = self._keep(self._accounts, a.id, a, keep=True)
            case PositionChanged(position=p):
                kept = self._keep(self._positions, (p.account_id, p.contract), p, keep=p.size > 0)
            case OrderChanged(order=o):
                kept = self._keep(self._orders, o.id, o, keep=o.working)
            case FillReceived(fill=f):
                if len(self._fills) == self._fills.maxlen:
                    self.counters["fills_dropped"] += 1
                self._fills.append(f)
                self.counters["fills"] += 1
                kept = True
        if not kept:
            return None
        self.counters[type(event).__name__] += 1
        return event

    def _keep(self, table: dict[Any, Any], key: object, value: object, *, keep: bool) -> bool:
        if not keep:
            table.pop(key, None)
        elif key in table or len(table) < self._max_items:
            table[key] = value
        else:
            self.counters["over_bound"] += 1
            return False
        return True

    def state(self) -> AccountState:
        return AccountState(
            accounts=tuple(sorted(self._accounts.values(), key=lambda a: a.id)),
            positions=tuple(self._positions[k] for k in sorted(self._positions)),
            orders=tuple(sorted(self._orders.values(), key=lambda o: (o.created_at, o.id))),
            fills=tuple(self._fills),
            fills_seen=self.counters["fills"],
            fills_dropped=self.counters["fills_dropped"],
        )
