"""The stats snapshot and its Prometheus text exposition.

A ``StatsSnapshot`` is the one answer of the stats actor to ``GetStats``. It is a
plain frozen Struct: the metrics endpoint is ``render_prometheus`` of it, and the
application's ``--json`` line and dashboard (``pxnode.snapshot.NodeSnapshot``) are
composed from it, so every view shows the same numbers.

Keys of ``counters``, ``gauges``, ``rates`` and ``latencies`` are
``"<source>.<name>"`` exactly as the reporting actor named them; Prometheus
metric names are derived from those keys here, at the edge, and nowhere else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping

import msgspec

from protocols.drops import why_dropped
from protocols.mailboxes import MailboxStatistics
from protocols.messages import BreakerState


class LatencySummary(msgspec.Struct, frozen=True):
    """One latency series, in seconds.

    ``count`` and ``sum`` cover the series' whole life (Prometheus summary
    semantics); ``p50``, ``p99`` and ``max`` cover only the ``window_count``
    most recent samples (the last one or two latency windows), so a spike an hour
    ago does not hide today's tail. Quantiles carry the actor's stated relative
    error; ``max`` is exact. With ``window_count == 0`` the three are 0.0.
    """

    count: int
    sum: float
    window_count: int
    p50: float
    p99: float
    max: float


class ChildStats(msgspec.Struct, frozen=True):
    """What the supervision events said about one child (keyed ``"<supervisor>/<child>"``)."""

    supervisor: str
    child: str
    starts: int = 0
    exits: int = 0
    failures: int = 0
    restarts: int = 0
    running: bool = False
    healthy: bool = False
    breaker: BreakerState = "closed"
    breaker_opens: int = 0


class ContractMetrics(msgspec.Struct, frozen=True):
    """One contract's series on /metrics; None is Prometheus' "no data" (NaN)."""

    contract: str
    symbol: str
    last_price: float | None
    """Last accepted trade price."""
    feed_age: float | None
    """Seconds since the contract's newest trade, quote or depth was received."""
    trades: int
    """Accepted trades."""


DROP_REASONS: dict[str, str] = {
    "invalid": "a report, sample or event whose name or value is malformed",
    "unknown": "a message the stats actor does not handle",
    "sources": "a new source beyond max_sources",
    "keys": "a new counter or gauge beyond max_keys",
    "latency_keys": "a new latency series beyond max_latency_keys",
    "latency_samples": "samples beyond max_samples_per_report in one report",
    "mailboxes": "a mailbox beyond max_mailboxes",
    "children": "a supervised child beyond max_children",
    "expired": "a source or mailbox sample silent for longer than source_ttl",
    "psutil": "a process memory/CPU sample that failed",
    "replies": "an answer to GetStats whose asker had already given up",
}
"""Why the stats actor drops: each ``reason`` label of ``pxnode_stats_dropped_total``."""


class StatsSnapshot(msgspec.Struct, frozen=True):
    """Everything the stats actor knows at ``taken_at`` (unix seconds).

    ``dropped`` counts what stats itself refused or discarded, by reason (the
    keys of ``DROP_REASONS``, which says why for each): every bound is visible,
    never silent.
    """

    taken_at: float
    uptime_s: float
    rss_bytes: int
    cpu_percent: float
    counters: dict[str, int]
    gauges: dict[str, float]
    rates: dict[str, float]
    latencies: dict[str, LatencySummary]
    mailboxes: dict[str, MailboxStatistics]
    children: dict[str, ChildStats]
    escalations: dict[str, int]
    dropped: dict[str, int]


# ------------------------------------------------------------------ Prometheus
#
# Theory of operation: the exposition is a list of families, each with one
# HELP, one TYPE and its samples. Two invariants make the text valid whatever
# names the sources chose:
#   * every sample name belongs to exactly one family: a family whose sample
#     names (a summary owns name, name_sum and name_count) are already owned is
#     left out and counted in pxnode_stats_exposition_skipped; fixed families are
#     added first, so data can never shadow them;
#   * no series appears twice: when two keys sanitize to the same family (``a.b``
#     and ``a_b``), each of their samples gets a ``key`` label with the raw key.

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_LabelSet = tuple[tuple[str, str], ...]
_Sample = tuple[str, _LabelSet, float]


def metric_name(key: str, suffix: str = "") -> str:
    """``pxnode_`` + ``key`` with every char outside [a-zA-Z0-9_] made ``_``, + ``suffix``.

    The prefix makes a leading digit harmless; colons are never produced, as
    Prometheus reserves them for recording rules. A key that already ends with
    the suffix keeps it once (``trades_total`` stays ``..._trades_total``).
    """
    name = f"pxnode_{_INVALID.sub('_', key)}"
    return name if name.endswith(suffix) else name + suffix


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


class _Exposition:
    _SKIPPED = "pxnode_stats_exposition_skipped"

    def __init__(self) -> None:
        self._owner: set[str] = {self._SKIPPED}
        self._lines: list[str] = []
        self._skipped = 0

    def add(self, name: str, kind: str, help_: str, samples: Iterable[_Sample]) -> None:
        owned = (name, f"{name}_sum", f"{name}_count") if kind == "summary" else (name,)
        if not self._owner.isdisjoint(owned):
            self._skipped += 1
            return
        self._owner.update(owned)
        self._lines.append(f"# HELP {name} {_escape_help(help_)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for sample_name, labels, value in samples:
            text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            series = f"{sample_name}{{{text}}}" if text else sample_name
            self._lines.append(f"{series} {_format_value(value)}")

    def scalar(self, name: str, kind: str, help_: str, value: float) -> None:
        self.add(name, kind, help_, [(name, (), value)])

    def text(self) -> str:
        help_ = "Metric families left out because their names clashed."
        self._owner.discard(self._SKIPPED)
        self.scalar(self._SKIPPED, "gauge", help_, self._skipped)
        return "\n".join(self._lines) + "\n"


def _by_family(keys: Iterable[str], suffix: str) -> dict[str, list[tuple[str, _LabelSet]]]:
    """Group raw keys by metric name; a group of more than one gets ``key`` labels."""
    families: dict[str, list[str]] = {}
    for key in sorted(keys):
        families.setdefault(metric_name(key, suffix), []).append(key)
    return {
        name: [(k, (("key", k),) if len(group) > 1 else ()) for k in group]
        for name, group in families.items()
    }


_MAILBOX_FIELDS = (
    ("depth", "gauge", "Messages queued in the mailbox."),
    ("capacity", "gauge", "Bound of the mailbox."),
    (
        "dropped",
        "counter",
        "Messages the mailbox's overflow policy dropped: a conflating or drop_oldest "
        "mailbox sheds old messages when full rather than block its sender.",
    ),
)
_CHILD_FIELDS = (
    ("starts", "counter", "Times the child was started."),
    ("exits", "counter", "Times the child exited, for any reason."),
    ("failures", "counter", "Times the child exited by raising."),
    ("restarts", "counter", "Restarts the supervisor scheduled for the child."),
    ("breaker_opens", "counter", "Times the child's circuit breaker opened."),
    ("running", "gauge", "1 while the child runs."),
    ("healthy", "gauge", "1 once the running child reported healthy."),
)
_BREAKER_STATES: tuple[BreakerState, ...] = ("closed", "open", "half_open")


_CONTRACT_FIELDS = (
    ("last_price", "pxnode_contract_last_price", "gauge", "Last accepted trade price."),
    (
        "feed_age",
        "pxnode_contract_feed_age_seconds",
        "gauge",
        "Seconds since the contract's newest trade, quote or depth was received.",
    ),
    ("trades", "pxnode_contract_trades_total", "counter", "Trades accepted for the contract."),
)


def render_prometheus(snapshot: StatsSnapshot, contracts: Iterable[ContractMetrics] = ()) -> str:
    """The snapshot (and each contract's series) as Prometheus text exposition format 0.0.4.

    Fixed families come first so that no reported key can shadow them.
    """
    s = snapshot
    out = _Exposition()
    out.scalar("pxnode_uptime_seconds", "gauge", "Seconds since stats started.", s.uptime_s)
    out.scalar("pxnode_process_resident_memory_bytes", "gauge", "Resident set size.", s.rss_bytes)
    out.scalar(
        "pxnode_process_cpu_percent", "gauge", "Process CPU use over the last tick.", s.cpu_percent
    )
    out.add(
        "pxnode_stats_dropped_total",
        "counter",
        "What the stats actor refused or discarded, by reason: "
        + "; ".join(f"{reason}: {why}" for reason, why in DROP_REASONS.items())
        + ".",
        [("pxnode_stats_dropped_total", (("reason", r),), n) for r, n in sorted(s.dropped.items())],
    )

    rows = sorted(contracts, key=lambda c: c.contract)
    for field, name, kind, help_ in _CONTRACT_FIELDS:
        samples: list[_Sample] = []
        for c in rows:
            value = getattr(c, field)
            labels = (("contract", c.contract), ("symbol", c.symbol))
            samples.append((name, labels, math.nan if value is None else value))
        out.add(name, kind, help_, samples)

    boxes = sorted(s.mailboxes.items())
    for field, kind, help_ in _MAILBOX_FIELDS:
        name = f"pxnode_mailbox_{field}" + ("_total" if kind == "counter" else "")
        out.add(name, kind, help_, [(name, (("mailbox", b),), getattr(m, field)) for b, m in boxes])

    kids = [(c, (("supervisor", c.supervisor), ("child", c.child))) for c in s.children.values()]
    kids.sort(key=lambda pair: pair[1])
    for field, kind, help_ in _CHILD_FIELDS:
        name = f"pxnode_child_{field}" + ("_total" if kind == "counter" else "")
        out.add(name, kind, help_, [(name, who, float(getattr(c, field))) for c, who in kids])
    name = "pxnode_child_breaker_state"
    out.add(
        name,
        "gauge",
        "1 for the current state of the child's circuit breaker, 0 for the others.",
        [
            (name, (*who, ("state", st)), float(c.breaker == st))
            for c, who in kids
            for st in _BREAKER_STATES
        ],
    )
    name = "pxnode_supervisor_escalations_total"
    out.add(
        name,
        "counter",
        "Times the supervisor gave up and escalated to its parent.",
        [(name, (("supervisor", sup),), n) for sup, n in sorted(s.escalations.items())],
    )

    _reported(
        out, s.counters, "_total", "counter", "Counter reported by a pxnode actor.", why_dropped
    )
    _reported(out, s.gauges, "", "gauge", "Gauge reported by a pxnode actor.")
    _reported(out, s.rates, "_per_second", "gauge", "Counter increase per second, rate window.")
    for name, group in _by_family(s.latencies, "_seconds").items():
        series = [(s.latencies[k], labels) for k, labels in group]
        out.add(name, "summary", "Latency reported by a pxnode actor.", _summary(name, series))
        maxima = [(f"{name}_max", labels, _windowed(lat, lat.max)) for lat, labels in series]
        out.add(f"{name}_max", "gauge", "Largest latency in the quantile window.", maxima)
    return out.text()


def _reported(
    out: _Exposition,
    values: Mapping[str, float],
    suffix: str,
    kind: str,
    help_: str,
    why: Callable[[str], str | None] = lambda _: None,
) -> None:
    for name, group in _by_family(values, suffix).items():
        text = why(group[0][0]) or help_
        out.add(name, kind, text, [(name, labels, values[k]) for k, labels in group])


def _windowed(summary: LatencySummary, value: float) -> float:
    """A windowed statistic, or NaN (Prometheus' "no data") for an empty window."""
    return value if summary.window_count else math.nan


def _summary(name: str, series: list[tuple[LatencySummary, _LabelSet]]) -> list[_Sample]:
    samples: list[_Sample] = []
    for lat, labels in series:
        samples.append((name, (*labels, ("quantile", "0.5")), _windowed(lat, lat.p50)))
        samples.append((name, (*labels, ("quantile", "0.99")), _windowed(lat, lat.p99)))
        samples.append((f"{name}_sum", labels, lat.sum))
        samples.append((f"{name}_count", labels, lat.count))
    return samples
