"""AccountActor: the trader's accounts, positions, orders and fills, from the user hub
and the REST searches.

Two tasks of one actor share its state on one thread, as in history. The
*inbox loop* folds user-hub events into the book (``book``), follows the user
hub through the ``Connected`` its connection actor tells it (never lost, unlike
a conflating ``topic.events`` mailbox) and answers ``GetAccountState``;
it never waits on HTTP. The *syncer* (only with an ``AccountConfig``, i.e. a
node with a gateway) makes the REST searches (``sync``) and merges their
answers into the same book. State changes only between awaits, so no lock is
needed.

When the syncer runs: once at start, when the user hub is first up (its
subscriptions sent, so no change can fall between the answers and the hub) or
``start_grace`` seconds after the start without it; then after every
``Connected`` of the user hub (a reconnect, a new token, a re-login), because
whatever changed while it was away was never told. Triggers that arrive during
a sync run one more sync after it. A failed request (after its own retries)
ends the sync: the failure is counted by kind, the sync is tried again after
``resync_min`` doubling to ``resync_max`` (or at once on the next
``Connected``), and the node goes on with what it has.

The syncer also asks Contract/searchById for the tick size and value of every
contract the positions and orders hold (after each sync, and when a hub event
brings a new one), so open P&L is money for any contract
(``AccountState.point_values``).

Every change applied, from either source, is told to ``topic.account`` as a
typed event (``AccountChanged``, ``PositionChanged``, ``OrderChanged``,
``FillReceived``; ``AccountSynced`` after each account's searches), which is
what ``node.stream_user`` delivers.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from protocols import rest
from protocols.account import AccountEvent, AccountState, GetAccountState
from protocols.hubs import Connected, SubscribeAccount
from protocols.interfaces import ActorContext, Inbox, Ref, optional_ref
from protocols.messages import CountersReported, HubMessageReceived, Request, Stop, Tick

from .book import AccountBook
from .config import COUNTERS, AccountConfig
from .sync import Searches

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("pxnode.account")

_BATCH = 256


class AccountActor:
    _wake: anyio.Event  # set when a sync is wanted; a new one per sync

    def __init__(
        self,
        max_fills: int = 1000,
        max_items: int = 10_000,
        *,
        config: AccountConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        budget: rest.RestBudget | None = None,
    ) -> None:
        self.counters: Counter[str] = Counter()
        follows = config.accounts if config is not None else ()
        self.book = AccountBook(self.counters, max_fills, max_items, follows)
        self._config = config
        self._transport = transport
        self._rng = rng if rng is not None else random.Random(0)
        self._searches = (
            Searches(config, self.counters, self._rng, budget) if config is not None else None
        )
        if config is not None:
            self.counters.update(dict.fromkeys(COUNTERS, 0))
        self._pending = True  # the start-up sync
        self._synced_at: float | None = None
        self._sync_error: str | None = None
        self._point_values: dict[str, float] = {}
        self._unpriceable: set[str] = set()  # lookups failed since the last sync began

    def __repr__(self) -> str:
        return f"<AccountActor accounts={len(self.book.accounts)} synced_at={self._synced_at}>"

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        topic = ctx.ref("topic.account")
        stats = optional_ref(ctx, "stats")
        self._wake = anyio.Event()
        async with anyio.create_task_group() as tg:
            if self._config is not None:
                tg.start_soon(self._sync_forever, self._config, ctx, topic)
            ctx.report_healthy()
            await self._serve(inbox, topic, stats)
            tg.cancel_scope.cancel()

    # ------------------------------------------------------------ inbox loop

    async def _serve(self, inbox: Inbox[Any], topic: Ref[Any], stats: Ref[Any] | None) -> None:
        while batch := await inbox.receive_batch(_BATCH):
            for msg in batch:
                match msg:
                    case Stop():
                        return
                    case HubMessageReceived(hub="user"):
                        event = self.on_user_event(msg.target, msg.arguments)
                        if event is not None:
                            await topic.tell(event)
                            if self._config is not None and self._unpriced():
                                self._wake.set()  # a new contract: look its tick value up
                    case Connected(hub="user"):
                        self._pending = True
                        self._wake.set()
                    case Request(body=GetAccountState()):
                        msg.reply.tell_nowait(self.state())
                    case Tick() if stats is not None:
                        stats.try_tell(CountersReported("account", dict(self.counters)))
                    case _:
                        self.counters["unknown"] += 1
            await anyio.lowlevel.checkpoint()

    def on_user_event(self, target: str, arguments: msgspec.Raw) -> AccountEvent | None:
        """Apply one user-hub invocation; the event to publish, or None if nothing changed."""
        return self.book.on_user_event(target, arguments)

    def state(self) -> AccountState:
        book = self.book
        return AccountState(
            accounts=tuple(sorted(book.accounts.values(), key=lambda a: a.id)),
            positions=tuple(book.positions[k] for k in sorted(book.positions)),
            orders=tuple(sorted(book.orders.values(), key=book.when)),
            fills=tuple(book.fills.values()),
            fills_seen=self.counters["fills"],
            fills_dropped=self.counters["fills_dropped"],
            synced_at=self._synced_at,
            sync_error=self._sync_error,
            point_values=dict(self._point_values),
        )

    # ---------------------------------------------------------------- syncer

    async def _sync_forever(
        self, config: AccountConfig, ctx: ActorContext, topic: Ref[Any]
    ) -> None:
        import httpx

        auth = ctx.ref("auth")
        hub = optional_ref(ctx, "connection_user") if not config.accounts else None
        with anyio.move_on_after(config.start_grace):
            await self._wake.wait()  # the user hub is up (or will not be soon)
        failures = 0
        async with httpx.AsyncClient(
            base_url=config.api_url, transport=self._transport, timeout=config.request_timeout
        ) as client:
            while True:
                if not (self._pending or self._unpriced()):
                    await self._wake.wait()
                self._wake = anyio.Event()
                if not self._pending:
                    await self._price(client, auth)
                    continue
                self._pending = False
                try:
                    await self._sync(config, client, ctx, auth, hub, topic)
                except rest.Failed as exc:
                    failures += 1
                    self.counters[f"failures_{exc.kind}"] += 1
                    self.counters["sync_failures"] += 1
                    self._sync_error = str(exc)
                    self._pending = True
                    delay = self._retry_delay(config, failures)
                    logger.warning("account sync failed (%s); again in %.1f s", exc, delay)
                    with anyio.move_on_after(delay):
                        await self._wake.wait()  # or at once when the hub reconnects
                else:
                    failures = 0
                finally:
                    self.book.end_sync()

    async def _sync(
        self,
        config: AccountConfig,
        client: httpx.AsyncClient,
        ctx: ActorContext,
        auth: Ref[Any],
        hub: Ref[Any] | None,
        topic: Ref[Any],
    ) -> None:
        """Account/search, then per account its open positions, open orders and fills."""
        searches, book = self._searches, self.book
        assert searches is not None
        book.begin_sync()
        self._unpriceable.clear()
        accounts, complete = await searches.accounts(client, auth)
        await _publish(topic, book.sync_accounts(accounts, complete))
        for account_id in [a.id for a in accounts if book.follows(a.id)]:
            if hub is not None:  # no account configured: follow every active one
                await hub.tell(SubscribeAccount(account_id))
            positions = await searches.positions(client, auth, account_id)
            orders = await searches.orders(client, auth, account_id)
            now_us = round(ctx.wall_time() * 1_000_000)
            fills = await searches.fills(client, auth, account_id, now_us)
            await _publish(topic, book.sync_account(account_id, positions, orders, fills))
        await self._price(client, auth)
        self.counters["syncs"] += 1
        self._synced_at = ctx.wall_time()
        self._sync_error = None

    def _unpriced(self) -> list[str]:
        """Contracts of positions and orders whose tick value is not known nor failed."""
        book = self.book
        held = {p.contract for p in book.positions.values()}
        held |= {o.contract for o in book.orders.values()}
        return sorted(held - self._point_values.keys() - self._unpriceable)

    async def _price(self, client: httpx.AsyncClient, auth: Ref[Any]) -> None:
        """Contract/searchById for every unpriced contract; a failure is counted and the
        contract left for the next sync (its P&L stays in points until then)."""
        assert self._searches is not None
        for contract in self._unpriced():
            try:
                self._point_values[contract] = await self._searches.point_value(
                    client, auth, contract
                )
            except rest.Failed as exc:
                self.counters[f"failures_{exc.kind}"] += 1
                self.counters["contracts_unpriced"] += 1
                self._unpriceable.add(contract)
                logger.warning("no tick value for %s: %s", contract[:60], exc)

    def _retry_delay(self, config: AccountConfig, failures: int) -> float:
        low, high, jitter = config.resync_min, config.resync_max, config.backoff_jitter
        return rest.jittered_backoff(failures, low, high, jitter, self._rng)


async def _publish(topic: Ref[Any], events: list[AccountEvent]) -> None:
    for event in events:
        await topic.tell(event)
