"""The health actor: a truthful verdict on the hubs, and the stale-feed watchdog.

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

Per hub, the verdict is one conjunction, so no combination of events can make
it lie (the peer SDK's "breaker closed, so healthy" while the socket was gone)::

    healthy = connected and breaker == "closed" and child_healthy and not stale

``child_healthy`` is cleared by the child's ``ChildStarted`` and ``ChildExited``
(a new incarnation has proved nothing yet) and set by ``ChildHealthy``;
``connected`` is cleared by ``Disconnected`` and by the child's exit (a dead
actor sends no ``Disconnected``).

Stale feed (the peer SDK's silent freeze): the market feed is watched while the
market hub is connected and at least one contract is expected (configured, or
seen producing data). It is quiet for ``now - max(newest data, connected_at)``
and stale once that exceeds ``stale_after`` (exactly ``stale_after`` is not
stale). One quiet contract is not a stale feed: it is listed, it lowers the
score, but only silence from every contract asks for a reconnect.

Reconnect requests, one per stale episode:

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
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, TypeGuard

import anyio
import msgspec

from protocols.errors import ConfigError, PxError
from protocols.health import ContractHealth, GetHealth, HealthComponents, HealthReport, HubHealth
from protocols.hubs import HUBS, Connected, Disconnected, HeartbeatMeasured, ReconnectRequested
from protocols.interfaces import ActorContext, Inbox
from protocols.messages import (
    BreakerState,
    BreakerTransitioned,
    ChildExited,
    ChildHealthy,
    ChildRestarting,
    ChildStarted,
    CountersReported,
    DepthAccepted,
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

_BREAKER_SCORE: dict[str, float] = {"closed": 1.0, "half_open": 0.5, "open": 0.0}
_BATCH = 256
_MAX_NAME_LEN = 200
_MAX_RTT = 3600.0
_NEVER = -math.inf
# A tell can fail because the receiver is full (WouldBlock, MailboxFull), gone
# (MailboxClosed, a closed reply channel) or absent (KeyError from ctx.ref).
_TELL_ERRORS = (
    PxError,
    KeyError,
    anyio.WouldBlock,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
)


class ScoreWeights(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Relative weights of the score components; each must be positive.

    Positive weights are what makes "unhealthy" and "score 1" exclusive: every
    condition that makes a hub unhealthy drags its component below 1.
    """

    connectivity: float = 0.3
    readiness: float = 0.2
    breaker: float = 0.2
    freshness: float = 0.2
    latency: float = 0.1


class HealthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds and bounds of the health actor (times in seconds)."""

    stale_after: float = 30.0
    """No market data for longer than this while connected and subscribed: stale feed."""
    contracts: list[str] = msgspec.field(default_factory=list)
    """Contracts expected to be subscribed; any other counts once it produces data."""
    hubs: list[str] = msgspec.field(default_factory=lambda: list(HUBS))
    """Hubs the verdict covers (a market-data-only node watches just ``market``)."""
    report_interval: float = 5.0
    """Seconds between ``CountersReported`` to stats (on Tick)."""
    weights: ScoreWeights = msgspec.field(default_factory=ScoreWeights)
    max_contracts: int = 10_000
    """Contracts tracked by name; the data of others still counts for the feed."""
    rtt_window: int = 64
    """Heartbeat round trips kept per hub for p50/max."""
    rtt_good: float = 0.5
    """A median round trip at or below this scores 1 ..."""
    rtt_bad: float = 5.0
    """... and at or above this 0 (linear in between)."""
    max_reasons: int = 20

    def __post_init__(self) -> None:
        for name in ("stale_after", "report_interval", "rtt_good", "rtt_bad"):
            value = getattr(self, name)
            if not (_is_time(value) and value > 0):
                raise ConfigError(f"health {name} must be a finite number > 0, got {value!r}")
        if self.rtt_good >= self.rtt_bad:
            raise ConfigError("health rtt_good must be below rtt_bad")
        for name in ScoreWeights.__struct_fields__:
            value = getattr(self.weights, name)
            if not (_is_time(value) and value > 0):
                raise ConfigError(f"health weight {name} must be > 0, got {value!r}")
        for name, high in (("max_contracts", 10**7), ("rtt_window", 10_000), ("max_reasons", 1000)):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= high:
                raise ConfigError(f"health {name} must be an integer in [1, {high}]")
        hubs = self.hubs
        if not hubs or not all(h in HUBS for h in hubs) or len(set(hubs)) != len(hubs):
            raise ConfigError(f"health hubs must be distinct names among {HUBS}, got {hubs!r}")
        if not all(_name_ok(c) for c in self.contracts):
            raise ConfigError("health contracts must be non-empty names of <= 200 characters")
        if len(set(self.contracts)) > self.max_contracts:
            raise ConfigError("health contracts exceed max_contracts")


def _is_time(value: object) -> TypeGuard[float]:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def _name_ok(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= _MAX_NAME_LEN


class _Hub:
    """What health knows about one hub; every field is set only by an event."""

    __slots__ = (
        "breaker",
        "child",
        "child_healthy",
        "connected",
        "connected_at",
        "connection_id",
        "connects",
        "disconnect_reason",
        "heard_at",
        "name",
        "reconnect_requests",
        "rtts",
    )

    def __init__(self, name: str, rtt_window: int) -> None:
        self.name = name
        self.child = f"connection_{name}"
        self.connected = False
        self.connected_at = _NEVER
        self.connection_id: str | None = None
        self.disconnect_reason: str | None = None
        self.breaker: BreakerState = "closed"
        self.child_healthy = False
        self.connects = 0
        self.reconnect_requests = 0
        self.heard_at = _NEVER
        self.rtts: deque[float] = deque(maxlen=rtt_window)


def _age(now: float, at: float) -> float | None:
    return None if at == _NEVER else max(0.0, now - at)


class HealthActor:
    """Watches hubs, breakers and feed freshness; answers ``GetHealth``, asks for reconnects."""

    def __init__(self, config: HealthConfig | None = None) -> None:
        self._config = config = config or HealthConfig()
        self._hubs = {name: _Hub(name, config.rtt_window) for name in config.hubs}
        self._by_child = {hub.child: hub for hub in self._hubs.values()}
        # Newest received_at per tracked contract (_NEVER: expected, no data yet).
        self._contracts: dict[str, float] = dict.fromkeys(config.contracts, _NEVER)
        self._newest_data = _NEVER  # over every contract, tracked or not
        self._stale = False  # the market feed, as of the last Tick
        self._requested_at: float | None = None  # the open episode's delivered request
        self._attempted_at = _NEVER  # last reconnect attempt, delivered or not
        self._reported_at = _NEVER
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
            case DepthAccepted():
                self._count("depth")
                self._on_data(msg.contract, msg.received_at, ctx.wall_time())
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

    def _on_items(
        self, items: object, kind: type[Trade | QuoteAccepted], key: str, ctx: ActorContext
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
            # the float test is _is_time's fast path (False for NaN and infinities).
            if not (
                isinstance(contract, str)
                and (-math.inf < at < math.inf if type(at) is float else _is_time(at))
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
            if len(contract) > _MAX_NAME_LEN or not contract:
                invalid += n
            else:
                future += ahead
                self._heard(contract, min(float(at), wall), n)
        if invalid:
            self._count("invalid", invalid)
        if future:  # a future stamp must not keep a dead feed "fresh" for ever
            self._count("future_clamped", future)

    def _on_data(self, contract: object, received_at: object, wall: float) -> None:
        if not (_name_ok(contract) and _is_time(received_at)):
            self._count("invalid")
            return
        at = float(received_at)
        if at > wall:  # a future stamp must not keep a dead feed "fresh" for ever
            at = wall
            self._count("future_clamped")
        self._heard(contract, at, 1)

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
            case BreakerTransitioned(new=new) if new in _BREAKER_SCORE:
                hub.breaker = new
            case BreakerTransitioned():
                self._count("invalid")

    def on_hub_event(self, msg: Connected | Disconnected | HeartbeatMeasured, wall: float) -> None:
        hub = self._hubs.get(msg.hub) if isinstance(msg.hub, str) else None
        if hub is None:
            self._count("invalid" if msg.hub not in HUBS else "unwatched")
            return
        match msg:
            case Connected(connection_id=cid):
                self._count("connects")
                hub.connected = True
                hub.connected_at = hub.heard_at = wall
                hub.connection_id = cid if _name_ok(cid) else None
                hub.connects += 1
                if hub.name == "market":  # a new connection ends the episode
                    self._requested_at = None
                    self._stale = False
            case Disconnected(reason=reason):
                self._count("disconnects")
                hub.connected = False
                hub.disconnect_reason = reason[:_MAX_NAME_LEN] if isinstance(reason, str) else ""
            case HeartbeatMeasured(rtt=rtt):
                if not (_is_time(rtt) and 0 <= rtt <= _MAX_RTT):
                    self._count("invalid")
                    return
                self._count("heartbeats")
                hub.rtts.append(float(rtt))
                hub.heard_at = max(hub.heard_at, wall)

    # ------------------------------------------------------------------ tick

    def on_tick(self, msg: Tick, ctx: ActorContext) -> None:
        now = msg.now
        if not _is_time(now):
            self._count("invalid")
            return
        self._count("ticks")
        wall = ctx.wall_time()
        if now > wall:  # else one bogus far-future Tick would silence requests and reports
            now = wall
            self._count("future_clamped")
        quiet = self._feed_quiet(now)
        stale = quiet is not None and quiet > self._config.stale_after
        if stale and not self._stale:
            self._count("stale_episodes")
        self._stale = stale
        if (
            stale
            and self._requested_at is None
            and now - self._attempted_at >= self._config.stale_after
        ):
            assert quiet is not None
            self._request_reconnect(now, quiet, ctx)
        if now - self._reported_at >= self._config.report_interval:
            self._reported_at = now
            self._report_counters(now, ctx)

    def _feed_quiet(self, now: float) -> float | None:
        """Seconds the watched market feed has been silent; None while not watched."""
        market = self._hubs.get("market")
        if market is None or not market.connected or not self._contracts:
            return None
        return max(0.0, now - max(self._newest_data, market.connected_at))

    def _request_reconnect(self, now: float, quiet: float, ctx: ActorContext) -> None:
        self._attempted_at = now
        request = ReconnectRequested("market", f"stale feed: no data for {quiet:.0f} s")
        try:
            ctx.ref("connection_market").tell_nowait(request)
        except _TELL_ERRORS:
            self._count("reconnect_failed")  # retried after stale_after
            return
        self._requested_at = now
        self._hubs["market"].reconnect_requests += 1
        self._count("reconnect_requests")

    # --------------------------------------------------------------- reports

    def _reply(self, request: Request, answer: Callable[[], object]) -> None:
        tell = getattr(request.reply, "tell_nowait", None)
        if not callable(tell):
            self._count("invalid")
            return
        try:
            tell(answer())
        except _TELL_ERRORS:
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
        try:
            ctx.ref("stats").tell_nowait(
                CountersReported(source="health", counters=report.counters, gauges=gauges)
            )
        except _TELL_ERRORS:
            self._count("reports_failed")

    def report(self, now: float) -> HealthReport:
        """Everything health knows, judged at ``now`` (unix seconds)."""
        cfg = self._config
        quiet = self._feed_quiet(now)
        feed_stale = quiet is not None and quiet > cfg.stale_after
        reasons: list[str] = []
        hubs = {
            name: self._hub_health(hub, now, feed_stale, reasons)
            for name, hub in self._hubs.items()
        }
        if feed_stale:
            assert quiet is not None
            reasons.append(f"market: stale feed: no data for {quiet:.0f} s")
        contracts, fresh = self._contract_health(now)
        watched = quiet is not None and not feed_stale
        quiet_names = [name for name, c in contracts.items() if not c.fresh] if watched else []
        freshness = 0.0 if feed_stale else (fresh / len(contracts) if contracts else 1.0)
        components = HealthComponents(
            connectivity=_share(h.connected for h in hubs.values()),
            readiness=_share(h.child_healthy for h in hubs.values()),
            breaker=sum(_BREAKER_SCORE[h.breaker] for h in hubs.values()) / len(hubs),
            freshness=freshness,
            latency=self._latency(hubs, reasons),
        )
        healthy = all(h.healthy for h in hubs.values())
        for name in quiet_names:
            age = contracts[name].last_event_age
            reasons.append(
                f"contract {name}: no data yet"
                if age is None
                else f"contract {name}: no data for {age:.0f} s"
            )
        if len(reasons) > cfg.max_reasons:
            more = len(reasons) - cfg.max_reasons + 1
            reasons = [*reasons[: cfg.max_reasons - 1], f"... and {more} more"]
        return HealthReport(
            taken_at=now,
            healthy=healthy,
            score=self._score(components, healthy),
            components=components,
            hubs=hubs,
            contracts=contracts,
            feed_age=_age(now, self._newest_data),
            reasons=reasons,
            counters=dict(self._counters),
        )

    def _hub_health(self, hub: _Hub, now: float, feed_stale: bool, reasons: list[str]) -> HubHealth:
        stale = feed_stale and hub.name == "market"
        if not hub.connected and hub.connects:
            why = hub.disconnect_reason or "no reason given"
            reasons.append(f"{hub.name}: disconnected ({why})")
        elif not hub.connected:
            reasons.append(f"{hub.name}: not connected yet")
        if hub.breaker != "closed":
            reasons.append(f"{hub.name}: circuit breaker {hub.breaker}")
        if not hub.child_healthy:
            reasons.append(f"{hub.name}: connection not healthy since its last start")
        rtts = sorted(hub.rtts)
        return HubHealth(
            healthy=hub.connected and hub.breaker == "closed" and hub.child_healthy and not stale,
            connected=hub.connected,
            breaker=hub.breaker,
            child_healthy=hub.child_healthy,
            stale=stale,
            connection_id=hub.connection_id,
            connects=hub.connects,
            reconnects=max(0, hub.connects - 1),
            reconnect_requests=hub.reconnect_requests,
            last_event_age=_age(now, hub.heard_at),
            rtt_p50=rtts[(len(rtts) - 1) // 2] if rtts else None,
            rtt_max=rtts[-1] if rtts else None,
            rtt_samples=len(rtts),
        )

    def _contract_health(self, now: float) -> tuple[dict[str, ContractHealth], int]:
        market = self._hubs.get("market")
        # Right after a (re)connect, a contract without data yet is not quiet.
        since = market.connected_at if market is not None and market.connected else _NEVER
        limit = self._config.stale_after
        out: dict[str, ContractHealth] = {}
        fresh = 0
        for name, at in self._contracts.items():
            ok = now - max(at, since) <= limit
            fresh += ok
            out[name] = ContractHealth(_age(now, at), ok)
        return out, fresh

    def _latency(self, hubs: dict[str, HubHealth], reasons: list[str]) -> float:
        cfg = self._config
        scores = []
        for name, hub in hubs.items():
            if hub.rtt_p50 is None:
                continue  # no measurement is no evidence of a slow hub
            score = min(1.0, max(0.0, (cfg.rtt_bad - hub.rtt_p50) / (cfg.rtt_bad - cfg.rtt_good)))
            if score < 1.0:
                reasons.append(f"{name}: heartbeat round trip p50 {hub.rtt_p50 * 1000:.0f} ms")
            scores.append(score)
        return sum(scores) / len(scores) if scores else 1.0

    def _score(self, components: HealthComponents, healthy: bool) -> float:
        weights = self._config.weights
        pairs: list[tuple[float, float]] = [
            (getattr(weights, f), getattr(components, f))
            for f in HealthComponents.__struct_fields__
        ]
        score = sum(w * c for w, c in pairs) / sum(w for w, _ in pairs)
        # Invariant: unhealthy scores below 1 (positive weights guarantee it up to
        # rounding; this makes it exact even for extreme weight ratios).
        return score if healthy else min(score, math.nextafter(1.0, 0.0))


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values)
