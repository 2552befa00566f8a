"""The stats actor: bounded statistics of everything observable.

Theory of operation
-------------------
Sources report *cumulative* counters (``CountersReported``); the newest report
of a source replaces its previous one, so a conflating mailbox may drop reports
without losing counts. The increase between two reports feeds a ring of
fixed-width time buckets per counter, from which rates over the window follow.
Latency samples feed log-spaced histograms. Supervision events update one
record per child. ``Tick`` samples the process (psutil, once per tick), expires
sources that stopped reporting and rotates the latency windows. ``GetStats``
answers with a ``StatsSnapshot``.

Every store has a bound from ``StatsConfig``: sources, keys, latency series,
samples per report, mailboxes, children and name lengths. What does not fit
is counted in ``dropped`` by reason, never stored and never silent; malformed
input is counted as ``invalid``. So memory stays flat whatever the sources send.

Snapshot keys are ``"<source>.<name>"``; a source name therefore may not
contain a dot, which keeps the key unambiguous (split at the first dot).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import anyio
import msgspec
import psutil

from protocols.checks import is_finite
from protocols.hubs import Connected, Disconnected, HeartbeatMeasured
from protocols.interfaces import ActorContext, Inbox
from protocols.mailboxes import MailboxStatistics
from protocols.messages import (
    BreakerTransitioned,
    ChildExited,
    ChildHealthy,
    ChildRestarting,
    ChildStarted,
    CountersReported,
    GetStats,
    MailboxesSampled,
    Request,
    Stop,
    SupervisionEvent,
    SupervisorEscalated,
    Tick,
)
from protocols.stats import ChildStats, StatsSnapshot

from .config import StatsConfig
from .windows import LatencySeries, LogScale, RateWindow

_MAX_COUNT = 2**63 - 1  # what a Prometheus/JSON consumer can still hold exactly
_BATCH = 256
_EXIT_REASONS = frozenset({"normal", "failed", "cancelled"})
_BREAKER_STATES = frozenset({"closed", "open", "half_open"})


class _Source:
    __slots__ = ("counters", "gauges", "latencies", "rates", "seen_at")

    def __init__(self, now: float) -> None:
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, float] = {}
        self.rates: dict[str, RateWindow] = {}
        self.latencies: dict[str, LatencySeries] = {}
        self.seen_at = now


def _is_count(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_COUNT


class StatsActor:
    """Owns every statistic of the node; answers ``GetStats`` with a snapshot."""

    def __init__(self, config: StatsConfig | None = None, *, process: Any = None) -> None:
        """``process`` is a ``psutil.Process`` (the current one unless a test passes a double)."""
        self._config = config = config or StatsConfig()
        self._process = process or psutil.Process()
        self._scale = LogScale(config.latency_error, config.latency_min, config.latency_max)
        self._buckets = round(config.rate_window / config.rate_bucket) + 1
        self._sources: dict[str, _Source] = {}
        self._keys = 0  # counters + gauges stored over all sources
        self._latency_keys = 0
        self._mailboxes: dict[str, MailboxStatistics] = {}
        self._mailboxes_at = 0.0
        self._children: dict[str, ChildStats] = {}
        self._escalations: dict[str, int] = {}
        self._dropped: Counter[str] = Counter()
        self._started = 0.0
        self._rotated_at = 0.0
        self._rss = 0
        self._cpu = 0.0

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        self._started = self._rotated_at = anyio.current_time()
        self._sample()  # primes cpu_percent, whose first reading is meaningless
        ctx.report_healthy()
        while batch := await inbox.receive_batch(_BATCH):
            for msg in batch:
                if isinstance(msg, Stop):
                    return
                self.on_message(msg, ctx)

    def on_message(self, msg: object, ctx: ActorContext) -> None:
        match msg:
            case CountersReported():
                self.on_counters_reported(msg)
            case MailboxesSampled():
                self.on_mailboxes_sampled(msg)
            case (
                ChildStarted()
                | ChildExited()
                | ChildRestarting()
                | ChildHealthy()
                | SupervisorEscalated()
                | BreakerTransitioned()
            ):
                self.on_supervision(msg)
            case Tick():
                self.on_tick()
            case Request(body=GetStats()):
                self.on_get_stats(msg, ctx)
            case Connected() | Disconnected() | HeartbeatMeasured():
                pass  # hub events share topic.events with supervision; health keeps them
            case _:
                self._dropped["unknown"] += 1

    # ------------------------------------------------------------ reports

    def _name_ok(self, name: object) -> bool:
        return isinstance(name, str) and 0 < len(name) <= self._config.max_name_len

    def on_counters_reported(self, msg: CountersReported) -> None:
        now = anyio.current_time()
        source = msg.source
        reports = (msg.counters, msg.gauges, msg.latencies)
        if not (self._name_ok(source) and "." not in source) or not all(
            isinstance(r, dict) for r in reports
        ):
            self._dropped["invalid"] += 1
            return
        src = self._sources.get(source)
        if src is None:
            if len(self._sources) >= self._config.max_sources:
                self._dropped["sources"] += 1
                return
            src = self._sources[source] = _Source(now)
            baseline = True  # counts from before we first heard of it are no increase
        else:
            baseline = False
        src.seen_at = now
        self._keys -= len(src.counters) + len(src.gauges)
        self._replace_counters(src, msg.counters, now, baseline)
        self._replace_gauges(src, msg.gauges)
        self._add_latencies(src, msg.latencies)

    def _admit(self, key: object, valid: bool) -> bool:
        if not (valid and self._name_ok(key)):
            self._dropped["invalid"] += 1
            return False
        if self._keys >= self._config.max_keys:
            self._dropped["keys"] += 1
            return False
        self._keys += 1
        return True

    def _replace_counters(
        self, src: _Source, counters: Mapping[Any, Any], now: float, baseline: bool
    ) -> None:
        epoch = math.floor(now / self._config.rate_bucket)
        kept: dict[str, int] = {}
        rates: dict[str, RateWindow] = {}
        for key, value in counters.items():
            if not self._admit(key, _is_count(value)):
                continue
            window = src.rates.get(key)
            if window is None:
                window = RateWindow(self._buckets, epoch)
                if not baseline:
                    window.add(epoch, value)  # a new counter of a known source started at 0
            else:
                old = src.counters[key]
                window.add(epoch, value - old if value >= old else value)  # else: it restarted
            kept[key] = value
            rates[key] = window
        src.counters, src.rates = kept, rates

    def _replace_gauges(self, src: _Source, gauges: Mapping[Any, Any]) -> None:
        src.gauges = {k: float(v) for k, v in gauges.items() if self._admit(k, is_finite(v))}

    def _add_latencies(self, src: _Source, latencies: Mapping[Any, Any]) -> None:
        cap = self._config.max_samples_per_report
        for key, samples in latencies.items():
            if not (self._name_ok(key) and isinstance(samples, list)):
                self._dropped["invalid"] += 1
                continue
            series = src.latencies.get(key)
            if series is None:
                if self._latency_keys >= self._config.max_latency_keys:
                    self._dropped["latency_keys"] += 1
                    continue
                series = src.latencies[key] = LatencySeries(self._scale.size)
                self._latency_keys += 1
            if len(samples) > cap:
                self._dropped["latency_samples"] += len(samples) - cap
            for sample in samples[:cap]:
                if is_finite(sample) and sample >= 0:
                    series.add(self._scale, sample)
                else:
                    self._dropped["invalid"] += 1

    def on_mailboxes_sampled(self, msg: MailboxesSampled) -> None:
        """The newest sample replaces the last; at most ``max_mailboxes`` are kept."""
        boxes: dict[str, MailboxStatistics] = {}
        for box in msg.mailboxes if isinstance(msg.mailboxes, list) else ():
            if not (isinstance(box, MailboxStatistics) and self._name_ok(box.name)):
                self._dropped["invalid"] += 1
            elif len(boxes) >= self._config.max_mailboxes:
                self._dropped["mailboxes"] += 1
            else:
                boxes[box.name] = box
        self._mailboxes = boxes
        self._mailboxes_at = anyio.current_time()

    # -------------------------------------------------------- supervision

    def on_supervision(self, msg: SupervisionEvent) -> None:
        if isinstance(msg, SupervisorEscalated):
            if not self._name_ok(msg.supervisor):
                self._dropped["invalid"] += 1
            elif msg.supervisor in self._escalations:
                self._escalations[msg.supervisor] += 1
            elif len(self._escalations) >= self._config.max_children:
                self._dropped["children"] += 1
            else:
                self._escalations[msg.supervisor] = 1
            return
        if not (self._name_ok(msg.supervisor) and self._name_ok(msg.child)) or (
            (isinstance(msg, ChildExited) and msg.reason not in _EXIT_REASONS)
            or (isinstance(msg, BreakerTransitioned) and msg.new not in _BREAKER_STATES)
        ):
            self._dropped["invalid"] += 1
            return
        key = f"{msg.supervisor}/{msg.child}"
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= self._config.max_children:
                self._dropped["children"] += 1
                return
            child = ChildStats(msg.supervisor, msg.child)
        replace = msgspec.structs.replace
        match msg:
            case ChildStarted():
                child = replace(child, starts=child.starts + 1, running=True, healthy=False)
            case ChildExited(reason=reason):
                failures = child.failures + (reason == "failed")
                child = replace(
                    child, exits=child.exits + 1, failures=failures, running=False, healthy=False
                )
            case ChildRestarting():
                child = replace(child, restarts=child.restarts + 1)
            case ChildHealthy():
                child = replace(child, healthy=True)
            case BreakerTransitioned(new=new):
                opens = child.breaker_opens + (new == "open")
                child = replace(child, breaker=new, breaker_opens=opens)
        self._children[key] = child

    # --------------------------------------------------------- clock, ask

    def on_tick(self) -> None:
        # Tick.now is the sender's unix time; windows and TTLs run on anyio's clock.
        now = anyio.current_time()
        self._sample()
        ttl = self._config.source_ttl
        for name in [n for n, s in self._sources.items() if now - s.seen_at > ttl]:
            src = self._sources.pop(name)
            self._keys -= len(src.counters) + len(src.gauges)
            self._latency_keys -= len(src.latencies)
            self._dropped["expired"] += 1
        if self._mailboxes and now - self._mailboxes_at > ttl:
            self._mailboxes = {}
            self._dropped["expired"] += 1
        if now - self._rotated_at >= self._config.latency_window:
            self._rotated_at = now
            for src in self._sources.values():
                for series in src.latencies.values():
                    series.rotate()

    def _sample(self) -> None:
        try:
            with self._process.oneshot():
                self._rss = int(self._process.memory_info().rss)
                self._cpu = float(self._process.cpu_percent(None))
        except (psutil.Error, OSError):  # out of file descriptors: a plain OSError (EMFILE)
            self._dropped["psutil"] += 1

    def on_get_stats(self, request: Request, ctx: ActorContext) -> None:
        try_tell = getattr(request.reply, "try_tell", None)
        if not callable(try_tell):
            self._dropped["invalid"] += 1
            return
        if not try_tell(self.snapshot(ctx.wall_time())):
            self._dropped["replies"] += 1  # the asker gave up (timed out) before we answered

    def snapshot(self, taken_at: float) -> StatsSnapshot:
        now = anyio.current_time()
        epoch = math.floor(now / self._config.rate_bucket)
        width = self._config.rate_bucket
        items = self._sources.items()
        return StatsSnapshot(
            taken_at=taken_at,
            uptime_s=now - self._started,
            rss_bytes=self._rss,
            cpu_percent=self._cpu,
            counters={f"{n}.{k}": v for n, s in items for k, v in s.counters.items()},
            gauges={f"{n}.{k}": v for n, s in items for k, v in s.gauges.items()},
            rates={f"{n}.{k}": w.rate(epoch, width) for n, s in items for k, w in s.rates.items()},
            latencies={
                f"{n}.{k}": series.summary(self._scale)
                for n, s in items
                for k, series in s.latencies.items()
            },
            mailboxes=dict(self._mailboxes),
            children=dict(self._children),
            escalations=dict(self._escalations),
            dropped=dict(self._dropped),
        )
