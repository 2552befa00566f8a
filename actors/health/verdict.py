"""What health knows about each hub, and the verdict judged from it: the truth table.

Kept apart from the actor so the judgement is a pure function of recorded facts
(``Hub`` records, the newest data per contract, the counters) and a time: the
same facts give the same report whether asked by ``GetHealth``, a ``Tick`` or a test.

Per hub, the verdict is one conjunction, so no combination of events can make
it lie (the peer SDK's "breaker closed, so healthy" while the socket was gone)::

    healthy = connected and breaker == "closed" and child_healthy and not stale

Stale feed (the peer SDK's silent freeze): the data feed (the market hub, or a
consuming node's ``stream``) is watched while it is connected and at least one
contract is expected (configured, or seen producing data). It is quiet for
``now - max(newest data, connected_at)`` and stale once that exceeds
``stale_after`` (exactly ``stale_after`` is not stale). One quiet contract is
not a stale feed: it is listed, it lowers the score, but only silence from
every contract asks for a reconnect (of the market hub: a stream is as fresh as
what its ingest node publishes).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping

from protocols.health import ContractHealth, HealthComponents, HealthReport, HubHealth
from protocols.messages import BreakerState

from .config import HealthConfig, ScoreWeights

BREAKER_SCORE: dict[str, float] = {"closed": 1.0, "half_open": 0.5, "open": 0.0}
NEVER = -math.inf


class Hub:
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
        self.child = "nats_source" if name == "stream" else f"connection_{name}"
        self.connected = False
        self.connected_at = NEVER
        self.connection_id: str | None = None
        self.disconnect_reason: str | None = None
        self.breaker: BreakerState = "closed"
        self.child_healthy = False
        self.connects = 0
        self.reconnect_requests = 0
        self.heard_at = NEVER
        self.rtts: deque[float] = deque(maxlen=rtt_window)


def data_feed(hubs: Mapping[str, Hub]) -> Hub | None:
    """The hub market data comes through: the market hub, or a consuming node's stream."""
    return hubs.get("market") or hubs.get("stream")


def feed_quiet(
    hubs: Mapping[str, Hub], contracts: Mapping[str, float], newest_data: float, now: float
) -> float | None:
    """Seconds the watched data feed has been silent; None while not watched."""
    feed = data_feed(hubs)
    if feed is None or not feed.connected or not contracts:
        return None
    return max(0.0, now - max(newest_data, feed.connected_at))


def judge(
    cfg: HealthConfig,
    hubs: Mapping[str, Hub],
    contracts: Mapping[str, float],
    newest_data: float,
    counters: Mapping[str, int],
    now: float,
) -> HealthReport:
    """Everything health knows, judged at ``now`` (unix seconds).

    ``contracts`` maps each tracked contract to its newest ``received_at``
    (``NEVER``: expected, no data yet); ``newest_data`` is over every contract.
    """
    quiet = feed_quiet(hubs, contracts, newest_data, now)
    feed_stale = quiet is not None and quiet > cfg.stale_after
    reasons: list[str] = []
    hub_health = {name: _hub_health(hub, now, feed_stale, reasons) for name, hub in hubs.items()}
    if feed_stale:
        feed = data_feed(hubs)
        assert quiet is not None and feed is not None
        reasons.append(f"{feed.name}: stale feed: no data for {quiet:.0f} s")
    contract_health, fresh = _contract_health(hubs, contracts, cfg.stale_after, now)
    watched = quiet is not None and not feed_stale
    quiet_names = [name for name, c in contract_health.items() if not c.fresh] if watched else []
    freshness = 0.0 if feed_stale else (fresh / len(contract_health) if contract_health else 1.0)
    components = HealthComponents(
        connectivity=_share(h.connected for h in hub_health.values()),
        readiness=_share(h.child_healthy for h in hub_health.values()),
        breaker=sum(BREAKER_SCORE[h.breaker] for h in hub_health.values()) / len(hub_health),
        freshness=freshness,
        latency=_latency(cfg, hub_health, reasons),
    )
    healthy = all(h.healthy for h in hub_health.values())
    for name in quiet_names:
        age = contract_health[name].last_event_age
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
        score=_score(cfg.weights, components, healthy),
        components=components,
        hubs=hub_health,
        contracts=contract_health,
        feed_age=_age(now, newest_data),
        reasons=reasons,
        counters=dict(counters),
    )


def _hub_health(hub: Hub, now: float, feed_stale: bool, reasons: list[str]) -> HubHealth:
    stale = feed_stale and hub.name in ("market", "stream")
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


def _contract_health(
    hubs: Mapping[str, Hub], contracts: Mapping[str, float], limit: float, now: float
) -> tuple[dict[str, ContractHealth], int]:
    feed = data_feed(hubs)
    # Right after a (re)connect, a contract without data yet is not quiet.
    since = feed.connected_at if feed is not None and feed.connected else NEVER
    out: dict[str, ContractHealth] = {}
    fresh = 0
    for name, at in contracts.items():
        ok = now - max(at, since) <= limit
        fresh += ok
        out[name] = ContractHealth(_age(now, at), ok)
    return out, fresh


def _latency(cfg: HealthConfig, hubs: dict[str, HubHealth], reasons: list[str]) -> float:
    scores = []
    for name, hub in hubs.items():
        if hub.rtt_p50 is None:
            continue  # no measurement is no evidence of a slow hub
        score = min(1.0, max(0.0, (cfg.rtt_bad - hub.rtt_p50) / (cfg.rtt_bad - cfg.rtt_good)))
        if score < 1.0:
            reasons.append(f"{name}: heartbeat round trip p50 {hub.rtt_p50 * 1000:.0f} ms")
        scores.append(score)
    return sum(scores) / len(scores) if scores else 1.0


def _score(weights: ScoreWeights, components: HealthComponents, healthy: bool) -> float:
    pairs: list[tuple[float, float]] = [
        (getattr(weights, f), getattr(components, f)) for f in HealthComponents.__struct_fields__
    ]
    score = sum(w * c for w, c in pairs) / sum(w for w, _ in pairs)
    # Invariant: unhealthy scores below 1 (positive weights guarantee it up to
    # rounding; this makes it exact even for extreme weight ratios).
    return score if healthy else min(score, math.nextafter(1.0, 0.0))


def _age(now: float, at: float) -> float | None:
    return None if at == NEVER else max(0.0, now - at)


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values)
