"""The health actor: records what the events say, watches the feed, asks for reconnects.

Theory of operation
-------------------
Health owns no socket and runs no timer; it only listens. Supervision events
say whether each connection child runs, has reported healthy since its last
start, and where its circuit breaker stands; ``Connected``/``Disconnected``
say whether its socket is up; ``HeartbeatMeasured`` feeds a fixed window of
round trips; accepted trades, quotes and depth give the newest ``received_at``
per contract. ``Tick(now)`` is the only moment health acts; ``GetHealth`` is
answered from the same state with ``ctx.wall_time()`` as "now", an asked
``Flush`` with health's counters. A time from the future (``received_at``,
``Tick.now``) is clamped to ``ctx.wall_time()``: it must not keep a dead feed
fresh, nor push the next request or report out of reach.

Per hub, the verdict (``verdict``) is a conjunction of these records alone.
``child_healthy`` is cleared by the child's ``ChildStarted`` and ``ChildExited``
(a new incarnation has proved nothing yet) and set by ``ChildHealthy``;
``connected`` is cleared by ``Disconnected`` and by the child's exit (a dead
actor sends no ``Disconnected``).

Reconnect requests, one per stale episode (stale as defined in ``verdict``):

================= ===================================== ==========================
state             event                                 next
================= ===================================== ==========================
idle              Tick, stale, >= stale_after since the requested (tell
                  last attempt                          ReconnectRequested)
idle              the tell fails (mailbox full, gone)   idle (retried after
                                                        stale_after)
requested         Tick, still stale                     requested (no storm)
requested         market Connected, or data received    idle
                  after the request
================= ===================================== ==========================

So a connection that ignores the request gets no second one until it
reconnects or data flows, and never more than one per ``stale_after``.

Bounds: contracts (``max_contracts``; data of others still proves the feed is
alive, their names are only counted), round trips (``rtt_window`` per hub),
reasons (``max_reasons``), names (200 characters). Input that does not have
the declared types (msgspec does not check on construction) is counted as
``invalid``, anything else as ``unknown``; neither is ever raised.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from protocols.checks import is_finite
from protocols.health import GetHealth, HealthReport
from protocols.hubs import FEEDS, Connected, Disconnected, HeartbeatMeasured, ReconnectRequested
from protocols.interfaces import ActorContext, Inbox, optional_ref
from protocols.messages import (
    BreakerTransitioned,
    ChildExited,
    ChildHealthy,
    ChildRestarting,
    ChildStarted,
    CountersReported,
    DepthAccepted,
    DepthsAccepted,
    Flush,
    QuoteAccepted,
    QuotesAccepted,
    Request,
    Stop,
    SupervisorEscalated,
    Tick,
    Trade,
    TradesAccepted,
)

from .config import MAX_NAME_LEN, HealthConfig, name_ok
from .verdict import BREAKER_SCORE, NEVER, Hub, feed_quiet, judge

_BATCH = 256
_MAX_RTT = 3600.0


class HealthActor:
    """Watches hubs, breakers and feed freshness; answers ``GetHealth``, asks for reconnects."""

    def __init__(self, config: HealthConfig | None = None) -> None:
        self._config = config = config or HealthConfig()
        self._hubs = {name: Hub(name, config.rtt_window) for name in config.hubs}
        self._by_child = {hub.child: hub for hub in self._hubs.values()}
        # Newest received_at per tracked contract (NEVER: expected, no data yet).
        self._contracts: dict[str, float] = dict.fromkeys(config.contracts, NEVER)
        self._newest_data = NEVER  # over every contract, tracked or not
        self._stale = False  # the market feed, as of the last Tick
        self._requested_at: float | None = None  # the open episode's delivered request
        self._attempted_at = NEVER  # last reconnect attempt, delivered or not
        self._reported_at = NEVER
        self._counters: Counter[str] = Counter()

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        ctx.report_healthy()
        while batch := await inbox.receive_batch(_BATCH):
            for msg in batch:
                if isinstance(msg, Stop):
                    self._report_counters(ctx.wall_time(), ctx)
                    return
                self.on_message(msg, ctx)
        self._report_counters(ctx.wall_time(), ctx)

    def on_message(self, msg: object, ctx: ActorContext) -> None:
        match msg:
            case TradesAccepted():
                self.on_trades(msg, ctx)
            case QuotesAccepted():
                self.on_quotes(msg, ctx)
            case DepthsAccepted():
                self.on_depths(msg, ctx)
            case Tick():
                self.on_tick(msg, ctx)
            case (
                ChildStarted()
                | ChildExited()
                | ChildRestarting()
                | ChildHealthy()
                | BreakerTransitioned()
                | SupervisorEscalated()
            ):
                self.on_supervision(msg)
            case Connected() | Disconnected() | HeartbeatMeasured():
                self.on_hub_event(msg, ctx.wall_time())
            case Request(body=GetHealth()):
                self._count("requests")
                self._reply(msg, lambda: self.report(ctx.wall_time()))
            case Request(body=Flush()):
                # Health tells only with tell_nowait, so all it caused is already out.
                self._reply(msg, lambda: dict(self._counters))
            case _:
                self._count("unknown")

    def _count(self, key: str, n: int = 1) -> None:
        self._counters[key] += n

    # ------------------------------------------------------------ market data

    def on_trades(self, msg: TradesAccepted, ctx: ActorContext) -> None:
        self._on_items(msg.trades, Trade, "trades", ctx)

    def on_quotes(self, msg: QuotesAccepted, ctx: ActorContext) -> None:
        self._on_items(msg.quotes, QuoteAccepted, "quotes", ctx)

    def on_depths(self, msg: DepthsAccepted, ctx: ActorContext) -> None:
        self._on_items(msg.depths, DepthAccepted, "depth", ctx)

    def _on_items(
        self,
        items: object,
        kind: type[Trade | QuoteAccepted | DepthAccepted],
        key: str,
        ctx: ActorContext,
    ) -> None:
        """Check every item, then record each contract once, with its newest stamp.

        Freshness keeps only maxima, so one update per contract with the batch's
        newest ``received_at`` leaves the same state as one per item, for a
        fraction of the cost on the live and replay paths; the counters stay per item.
        """
        if not isinstance(items, list):
            self._count("invalid")
            return
        wall = ctx.wall_time()
        self._count(key, len(items))
        # contract -> [newest received_at, items, items from the future]
        newest: dict[str, list[Any]] = {}
        invalid = future = 0
        for item in items:
            if not isinstance(item, kind):
                invalid += 1
                continue
            contract = item.contract
            at = item.received_at
            # A non-str contract is never hashed (an unhashable one cannot crash us);
            # the float test is is_finite's fast path (False for NaN and infinities).
            if not (
                isinstance(contract, str)
                and (-math.inf < at < math.inf if type(at) is float else is_finite(at))
            ):
                invalid += 1
                continue
            seen = newest.get(contract)
            if seen is None:
                newest[contract] = [at, 1, at > wall]
            else:
                if at > seen[0]:
                    seen[0] = at
                seen[1] += 1
                seen[2] += at > wall
        for contract, (at, n, ahead) in newest.items():
            if len(contract) > MAX_NAME_LEN or not contract:
                invalid += n
            else:
                future += ahead
                self._heard(contract, min(float(at), wall), n)
        if invalid:
            self._count("invalid", invalid)
        if future:  # a future stamp must not keep a dead feed "fresh" for ever
            self._count("future_clamped", future)

    def _heard(self, contract: str, at: float, n: int) -> None:
        """``n`` items of ``contract`` arrived, the newest at ``at`` (valid, not future)."""
        self._newest_data = max(self._newest_data, at)
        market = self._hubs.get("market")
        if market is not None:
            market.heard_at = max(market.heard_at, at)
        if self._requested_at is not None and at > self._requested_at:
            self._requested_at = None  # fresh data ends the episode
        last = self._contracts.get(contract)
        if last is None:
            if len(self._contracts) >= self._config.max_contracts:
                self._count("contracts_dropped", n)
                return
            self._contracts[contract] = at
        elif at > last:
            self._contracts[contract] = at

    # ------------------------------------------------------------ supervision

    def on_supervision(self, msg: Any) -> None:
        self._count("supervision_events")
        if isinstance(msg, SupervisorEscalated):
            self._count("escalations")
            return
        child = msg.child
        if not isinstance(child, str):
            self._count("invalid")
            return
        hub = self._by_child.get(child)
        if hub is None:
            return  # another child: stats keeps its record
        match msg:
            case ChildStarted():
                hub.child_healthy = False
            case ChildExited():
                hub.child_healthy = False
                hub.connected = False
                hub.disconnect_reason = "connection actor exited"
            case ChildHealthy():
                hub.child_healthy = True
            case BreakerTransitioned(new=new) if new in BREAKER_SCORE:
                hub.breaker = new
            case BreakerTransitioned():
                self._count("invalid")

    def on_hub_event(self, msg: Connected | Disconnected | HeartbeatMeasured, wall: float) -> None:
        hub = self._hubs.get(msg.hub) if isinstance(msg.hub, str) else None
        if hub is None:
            self._count("invalid" if msg.hub not in FEEDS else "unwatched")
            return
        match msg:
            case Connected(connection_id=cid):
                self._count("connects")
                hub.connected = True
                hub.connected_at = hub.heard_at = wall
                hub.connection_id = cid if name_ok(cid) else None
                hub.connects += 1
                if hub.name == "market":  # a new connection ends the episode
                    self._requested_at = None
                    self._stale = False
            case Disconnected(reason=reason):
                self._count("disconnects")
                hub.connected = False
                hub.disconnect_reason = reason[:MAX_NAME_LEN] if isinstance(reason, str) else ""
            case HeartbeatMeasured(rtt=rtt):
                if not (is_finite(rtt) and 0 <= rtt <= _MAX_RTT):
                    self._count("invalid")
                    return
                self._count("heartbeats")
                hub.rtts.append(float(rtt))
                hub.heard_at = max(hub.heard_at, wall)

    # ------------------------------------------------------------------ tick

    def on_tick(self, msg: Tick, ctx: ActorContext) -> None:
        now = msg.now
        if not is_finite(now):
            self._count("invalid")
            return
        self._count("ticks")
        wall = ctx.wall_time()
        if now > wall:  # else one bogus far-future Tick would silence requests and reports
            now = wall
            self._count("future_clamped")
        quiet = feed_quiet(self._hubs, self._contracts, self._newest_data, now)
        stale = quiet is not None and quiet > self._config.stale_after
        if stale and not self._stale:
            self._count("stale_episodes")
        self._stale = stale
        if (
            stale
            and "market" in self._hubs  # a stream is as fresh as what its ingest node publishes
            and self._requested_at is None
            and now - self._attempted_at >= self._config.stale_after
        ):
            assert quiet is not None
            self._request_reconnect(now, quiet, ctx)
        if now - self._reported_at >= self._config.report_interval:
            self._reported_at = now
            self._report_counters(now, ctx)

    def _request_reconnect(self, now: float, quiet: float, ctx: ActorContext) -> None:
        self._attempted_at = now
        request = ReconnectRequested("market", f"stale feed: no data for {quiet:.0f} s")
        market = optional_ref(ctx, "connection_market")
        if market is None or not market.try_tell(request):
            self._count("reconnect_failed")  # retried after stale_after
            return
        self._requested_at = now
        self._hubs["market"].reconnect_requests += 1
        self._count("reconnect_requests")

    # --------------------------------------------------------------- reports

    def _reply(self, request: Request, answer: Callable[[], object]) -> None:
        try_tell = getattr(request.reply, "try_tell", None)
        if not callable(try_tell):
            self._count("invalid")
            return
        if not try_tell(answer()):
            self._count("replies_failed")  # the asker gave up before we answered

    def _report_counters(self, now: float, ctx: ActorContext) -> None:
        report = self.report(now)
        c = report.components
        gauges = {
            "score": report.score,
            "healthy": float(report.healthy),
            "connectivity": c.connectivity,
            "readiness": c.readiness,
            "breaker": c.breaker,
            "freshness": c.freshness,
            "latency": c.latency,
            "contracts": float(len(self._contracts)),
        }
        if report.feed_age is not None:
            gauges["feed_age"] = report.feed_age
        for name, hub in report.hubs.items():
            gauges[f"{name}_connected"] = float(hub.connected)
            gauges[f"{name}_healthy"] = float(hub.healthy)
        stats = optional_ref(ctx, "stats")
        report_msg = CountersReported(source="health", counters=report.counters, gauges=gauges)
        if stats is None or not stats.try_tell(report_msg):
            self._count("reports_failed")

    def report(self, now: float) -> HealthReport:
        """Everything health knows, judged at ``now`` (unix seconds)."""
        return judge(
            self._config, self._hubs, self._contracts, self._newest_data, self._counters, now
        )
