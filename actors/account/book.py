"""AccountBook: the trader's state as two sources tell it, the user hub and the REST searches.

The user hub says what changed, never what is: an order event carries the
order's new status, a position event its new size (0: closed), an account event
its new balance. The book keeps the latest of each, drops orders that stopped
working and positions that closed, and keeps the newest ``max_fills`` fills
(newest by the instant of their timestamps, not by the text: the gateway may write
any offset), each fill once (keyed by its id, whichever source told it first).

The REST searches say what is, at the moment each answer was made. They are
merged so that nothing the hub said meanwhile is undone: while a sync is under
way (``begin_sync`` .. ``end_sync``) every key a hub event touches is noted, and
the REST answers leave those keys alone; every other key takes the REST value,
and one the answers no longer list is gone (a position closed, an order no
longer working). An answer with an item of the wrong shape is not complete, so
nothing absent from it is removed.

Bounds: ``max_fills`` fills (older ones counted in ``fills_dropped``), and
``max_items`` accounts, positions and working orders each (a new one beyond it
is counted in ``over_bound`` and not kept).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from protocols.account import (
    AccountChanged,
    AccountEvent,
    AccountInfo,
    AccountSynced,
    Fill,
    FillReceived,
    OpenPosition,
    OrderChanged,
    PositionChanged,
    WorkingOrder,
    decode_user_event,
)
from protocols.timestamps import TimestampParser

_ARGUMENTS = msgspec.json.Decoder(tuple[msgspec.Raw])
_BAD_FRAME = (msgspec.DecodeError, msgspec.ValidationError, KeyError)

Key = tuple[str, Any]


class AccountBook:
    def __init__(
        self, counters: Counter[str], max_fills: int, max_items: int, follows: Iterable[int] = ()
    ) -> None:
        """``follows``: the only accounts kept (none: every one). The hub tells every
        account's balance (SubscribeAccounts takes no id) while only the followed ones'
        positions are searched and subscribed: another account, listed, would show an
        open P&L of nothing held."""
        self.counters = counters
        self._max_fills = max_fills
        self._max_items = max_items
        self._follows = frozenset(follows)
        self.accounts: dict[int, AccountInfo] = {}
        self.positions: dict[tuple[int, str], OpenPosition] = {}
        self.orders: dict[int, WorkingOrder] = {}
        self.fills: dict[int, Fill] = {}  # oldest first
        self._touched: set[Key] | None = None  # keys hub events changed during a sync
        self._timestamps = TimestampParser()

    # --------------------------------------------------------------- user hub

    def on_user_event(self, target: str, arguments: msgspec.Raw) -> AccountEvent | None:
        """Apply one user-hub invocation; the event to publish, or None if nothing changed."""
        try:
            (payload,) = _ARGUMENTS.decode(arguments)
            event = decode_user_event(target, payload)
        except _BAD_FRAME:
            self.counters["rejected"] += 1
            return None
        owner = _account_of(event)
        if owner is not None and not self.follows(owner):
            self.counters["unfollowed"] += 1
            return None
        match event:
            case AccountChanged(account=a):
                kept = self._keep(self.accounts, ("account", a.id), a, keep=True)
            case PositionChanged(position=p) if p.size < 0:  # a side is the type, never a sign
                self.counters["rejected"] += 1
                return None
            case PositionChanged(position=p):
                key = (p.account_id, p.contract)
                kept = self._keep(self.positions, ("position", key), p, keep=p.size > 0)
            case OrderChanged(order=o):
                kept = self._keep(self.orders, ("order", o.id), o, keep=o.working)
            case FillReceived(fill=f):
                kept = self._add_fills([f]) == [f]
                if not kept:
                    self.counters["fills_repeated"] += 1
            case _:
                kept = False
        if not kept:
            return None
        self.counters[type(event).__name__] += 1
        return event

    def follows(self, account_id: int) -> bool:
        return not self._follows or account_id in self._follows

    def _keep(
        self, table: dict[Any, Any], key: Key, value: object, *, keep: bool, hub: bool = True
    ) -> bool:
        if hub and self._touched is not None:
            self._touched.add(key)
        if not keep:
            table.pop(key[1], None)
        elif key[1] in table or len(table) < self._max_items:
            table[key[1]] = value
        else:
            self.counters["over_bound"] += 1
            return False
        return True

    # ------------------------------------------------------------------- REST

    def begin_sync(self) -> None:
        self._touched = set()

    def end_sync(self) -> None:
        self._touched = None

    def sync_accounts(self, accounts: list[AccountInfo], complete: bool) -> list[AccountEvent]:
        """Account/search's active accounts (the followed ones); those it no longer lists
        are dropped."""
        fresh = {a.id: a for a in accounts if self.follows(a.id)}
        changed, _ = self._merge("account", self.accounts, fresh, lambda _: True, complete)
        events: list[AccountEvent] = [AccountChanged(a) for a in changed]
        return self._counted(events)

    def sync_account(
        self,
        account_id: int,
        positions: tuple[list[OpenPosition], bool],
        orders: tuple[list[WorkingOrder], bool],
        fills: list[Fill],
    ) -> list[AccountEvent]:
        """One account's open positions, open orders (each with whether its answer was
        complete) and recent fills, merged; the events that say what changed."""
        fresh_positions = {(p.account_id, p.contract): p for p in positions[0]}
        changed, closed = self._merge(
            "position",
            self.positions,
            {k: p for k, p in fresh_positions.items() if k[0] == account_id},
            lambda p: p.account_id == account_id,
            positions[1],
        )
        events: list[AccountEvent] = [PositionChanged(p) for p in changed]
        events += [PositionChanged(msgspec.structs.replace(p, size=0)) for p in closed]
        changed_orders, gone = self._merge(
            "order",
            self.orders,
            {o.id: o for o in orders[0] if o.account_id == account_id},
            lambda o: o.account_id == account_id,
            orders[1],
        )
        events += [OrderChanged(o) for o in changed_orders]
        events += [FillReceived(f) for f in self._add_fills(fills)]
        self._counted(events)
        return [*events, AccountSynced(account_id, tuple(o.id for o in gone))]

    def _merge(
        self,
        kind: str,
        table: dict[Any, Any],
        fresh: dict[Any, Any],
        mine: Callable[[Any], bool],
        complete: bool,
    ) -> tuple[list[Any], list[Any]]:
        """Take every ``fresh`` value the hub left alone; if the answer was ``complete``,
        drop every value of ``mine`` it does not list. The values set, and those dropped."""
        changed = [
            v
            for k, v in fresh.items()
            if self._takes((kind, k))
            and table.get(k) != v
            and self._keep(table, (kind, k), v, keep=_open(v), hub=False)
        ]
        dropped = []
        if complete:
            for k, v in list(table.items()):
                if mine(v) and k not in fresh and self._takes((kind, k)):
                    del table[k]
                    dropped.append(v)
        return changed, dropped

    def _counted(self, events: list[AccountEvent]) -> list[AccountEvent]:
        for event in events:
            self.counters[type(event).__name__] += 1
        return events

    def _takes(self, key: Key) -> bool:
        """Whether REST may set ``key``: no hub event changed it since the sync began."""
        return self._touched is None or key not in self._touched

    def _add_fills(self, fills: Iterable[Fill]) -> list[Fill]:
        """Keep the fills not kept yet (or changed, e.g. voided); those are returned.

        One listed twice counts once. With the book full, a fill older than every kept
        one is no news: a resync lists the fills evicted before, and they would be
        taken, counted and evicted again at every sync.
        """
        fresh = {f.id: f for f in fills}
        full = len(self.fills) >= self._max_fills
        oldest = self.when(next(iter(self.fills.values()))) if full and self.fills else None
        added = [
            f
            for f in fresh.values()
            if self.fills.get(f.id) != f
            and (oldest is None or f.id in self.fills or self.when(f) > oldest)
        ]
        if not added:
            return []
        late = False
        newest = next(reversed(self.fills.values()), None)
        newest_at = None if newest is None else self.when(newest)  # parsed once, not per fill
        for f in added:
            if f.id not in self.fills:
                self.counters["fills"] += 1
                late = late or (newest_at is not None and self.when(f) < newest_at)
            self.fills[f.id] = f
        if late:  # a fill older than one kept: keep them in time order
            self.fills = dict(sorted(self.fills.items(), key=lambda kv: self.when(kv[1])))
        while len(self.fills) > self._max_fills:
            del self.fills[next(iter(self.fills))]
            self.counters["fills_dropped"] += 1
        return [f for f in added if f.id in self.fills]

    def when(self, item: Fill | WorkingOrder) -> tuple[int, int]:
        """Its place in time: the instant of its timestamp, as written in any offset (an
        unreadable one first), then its id."""
        at = item.at if isinstance(item, Fill) else item.created_at
        us = self._timestamps.parse(at)
        return (_UNREADABLE if us is None else us, item.id)


_UNREADABLE = -(1 << 63)


def _open(value: object) -> bool:
    """Whether a REST value is one the book keeps: an open position, a working order."""
    if isinstance(value, OpenPosition):
        return value.size > 0
    if isinstance(value, WorkingOrder):
        return value.working
    return True


def _account_of(event: AccountEvent) -> int | None:
    """The account an event is about (None: a sync's summary, about all of them)."""
    match event:
        case AccountChanged(account=a):
            return a.id
        case PositionChanged(position=p):
            return p.account_id
        case OrderChanged(order=o):
            return o.account_id
        case FillReceived(fill=f):
            return f.account_id
    return None
