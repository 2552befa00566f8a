"""The live screen of ``pxnode demo`` and ``pxnode run``, and their ``--json`` line.

Three layers, so what a trader sees is decided by a pure function:
``collect_view`` asks the node (snapshot, health, bars, mailboxes) and drains the
dashboard's conflating subscriptions into a frozen ``DashboardView``; ``render``
(in ``dashboard_render``) turns a view and a terminal size into lines, with no
I/O; ``run_dashboard`` is the loop that draws them (a ``rich.live.Live`` on a
terminal, one plain line per refresh otherwise, so a pipe or a log file never
receives escape codes).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import anyio
import msgspec
import polars as pl
from rich.console import Console
from rich.live import Live

from protocols.errors import AskTimeout, ConfigError
from protocols.hubs import Connected, Disconnected, HeartbeatMeasured
from protocols.interfaces import Inbox
from protocols.messages import (
    Bar,
    BreakerTransitioned,
    ChildExited,
    ChildHealthy,
    ChildRestarting,
    ChildStarted,
    QuotesAccepted,
    SupervisorEscalated,
)
from protocols.timeframes import bar_end, parse_timeframe
from supervisors.mailbox import MailboxSpec, MailboxStatistics, OverflowPolicy
from supervisors.node import Node

from .dashboard_render import (
    MAX_CONTRACTS,
    DashboardView,
    QuoteView,
    SeriesView,
    render,
    summary_line,
)
from .lines import Lines
from .snapshot import take_snapshot

MAX_EVENTS = 50
MAX_MAILBOXES = 16


# ------------------------------------------------------------------ collect


async def collect_view(
    node: Node,
    quotes_inbox: Inbox[Any],
    timeframes: Sequence[str],
    bars_n: int = 20,
    *,
    events_inbox: Inbox[Any] | None = None,
    previous: DashboardView | None = None,
) -> DashboardView:
    """Ask the node for one frame; quotes and events carry over from ``previous``."""
    snapshot = await take_snapshot(node)
    health = await node.health()
    quotes = dict(previous.quotes) if previous is not None else {}
    while batch := quotes_inbox.drain(1024):
        for msg in batch:
            if not isinstance(msg, QuotesAccepted):
                continue
            for quote in msg.quotes:
                old = quotes.get(quote.contract, QuoteView())
                quotes[quote.contract] = QuoteView(
                    bid=old.bid if quote.bid is None else quote.bid,
                    ask=old.ask if quote.ask is None else quote.ask,
                    last=old.last if quote.last is None else quote.last,
                )
    events = list(previous.events) if previous is not None else []
    if events_inbox is not None:
        stamp = datetime.fromtimestamp(node.registry.wall_time(), UTC).strftime("%H:%M:%S")
        while batch := events_inbox.drain(1024):
            events.extend(f"{stamp} {text}" for text in map(describe_event, batch) if text)
    configured = list(dict.fromkeys(node.config.contracts))
    contracts = (*configured, *sorted(set(snapshot.contracts) - set(configured)))
    now_us = round(node.registry.wall_time() * 1_000_000)
    series: dict[str, dict[str, SeriesView]] = {}
    for contract in contracts[:MAX_CONTRACTS]:
        series[contract] = {
            tf: _series(await node.bars(contract, tf, bars_n + 1), tf, now_us, bars_n)
            for tf in timeframes
        }
    return DashboardView(
        snapshot=snapshot,
        health=health,
        contracts=contracts,
        timeframes=tuple(timeframes),
        quotes=quotes,
        series=series,
        mailboxes=_busiest(node),
        events=tuple(events[-MAX_EVENTS:]),
    )


def _series(frame: pl.DataFrame, timeframe: str, now_us: int, bars_n: int) -> SeriesView:
    """The last row is the forming bar only while its interval has not ended."""
    rows = frame.with_columns(frame["start"].dt.epoch("us")).rows(named=True)
    forming = None
    if rows and bar_end(parse_timeframe(timeframe), rows[-1]["start"]) > now_us:
        forming = Bar(**rows.pop())
    return SeriesView(tuple(row["close"] for row in rows[-bars_n:]), forming)


def _busiest(node: Node) -> tuple[MailboxStatistics, ...]:
    # An actor mailbox attached to topics is listed once per topic: count it once.
    unique = {s.name: s for s in node.mailbox_statistics()}.values()

    def load(s: MailboxStatistics) -> tuple[bool, float, int]:
        fill = s.depth / max(s.capacity, 1)
        return (fill >= 0.5 or s.dropped > 0, fill, s.dropped)

    ranked = sorted(unique, key=load, reverse=True)[:MAX_MAILBOXES]
    return tuple(ranked)


def describe_event(msg: object) -> str | None:
    """One line for the events list; None for what is too frequent to list (heartbeats)."""
    match msg:
        case BreakerTransitioned(child=child, old=old, new=new, cooldown=cooldown):
            wait = f" (cool-down {cooldown:.0f}s)" if new == "open" and cooldown else ""
            return f"{child} breaker {old} → {new}{wait}"
        case ChildExited(child=child, reason=reason, error=error):
            return f"{child} exited: {reason}" + (f" ({error})" if error else "")
        case ChildRestarting(child=child, attempt=attempt, delay=delay):
            return f"{child} restarting in {delay:.1f}s (attempt {attempt})"
        case ChildStarted(child=child, incarnation=incarnation):
            return f"{child} started (#{incarnation})"
        case ChildHealthy(child=child):
            return f"{child} healthy"
        case SupervisorEscalated(supervisor=supervisor, reason=reason):
            return f"{supervisor} escalated: {reason}"
        case Connected(hub=hub):
            return f"{hub} hub connected"
        case Disconnected(hub=hub, reason=reason):
            return f"{hub} hub disconnected: {reason}"
        case HeartbeatMeasured():
            return None
    return type(msg).__name__


# ---------------------------------------------------------------------- run


async def run_dashboard(
    node: Node,
    stopping_event: anyio.Event,
    *,
    timeframes: Sequence[str],
    duration: float | None,
    console: Console | None = None,
    refresh: float = 1.0,
) -> None:
    """Redraw every ``refresh`` seconds until ``stopping_event`` or ``duration``.

    Both subscriptions conflate (DROP_OLDEST): a slow terminal costs the node
    nothing but counted drops in the dashboard's own mailboxes.
    """
    pacer = _Pacer(stopping_event, refresh, duration)
    console = console if console is not None else Console()
    conflate = OverflowPolicy.DROP_OLDEST
    with (
        node.topic("topic.quotes").subscribe("dashboard.quotes", MailboxSpec(1024, conflate)) as qs,
        node.topic("topic.events").subscribe("dashboard.events", MailboxSpec(256, conflate)) as es,
    ):

        async def frame(previous: DashboardView | None) -> DashboardView:
            bars_n = max(20, min(console.width - 58, 120))
            try:
                return await collect_view(
                    node, qs, timeframes, bars_n, events_inbox=es, previous=previous
                )
            except AskTimeout as error:  # a busy or restarting actor: say so, keep drawing
                if previous is None:
                    raise
                return msgspec.structs.replace(previous, stale=str(error))

        view = await frame(None)
        if not console.is_terminal:
            # A pipe may stop being read: its lines go through Lines, never blocking the loop.
            with Lines(console.file) as lines:
                lines.write(summary_line(view))
                while await pacer.wait():
                    view = await frame(view)
                    lines.write(summary_line(view))
            return
        # auto_refresh=False: rich would otherwise redraw from a thread of its own.
        draw = render(view, console.width, console.height)
        with Live(draw, console=console, auto_refresh=False) as live:
            while await pacer.wait():
                view = await frame(view)
                live.update(render(view, console.width, console.height), refresh=True)


async def run_json(
    node: Node,
    stopping_event: anyio.Event,
    *,
    duration: float | None,
    out: TextIO = sys.stdout,
    refresh: float = 1.0,
) -> None:
    """``--json``: one ``NodeSnapshot`` per line per ``refresh`` seconds.

    Written by ``Lines``: a reader that stops reading costs counted dropped
    lines, never a blocked event loop.
    """
    pacer = _Pacer(stopping_event, refresh, duration)
    with Lines(out) as lines:
        while True:
            lines.write(msgspec.json.encode(await take_snapshot(node)).decode())
            if not await pacer.wait():
                return


class _Pacer:
    """Wake-ups at ``start + k * period`` until stopped or past ``start + duration``.

    A fixed schedule does not drift by the time each frame takes; wake-ups
    missed while a frame was slow are skipped, not caught up in a burst.
    """

    def __init__(self, stopping: anyio.Event, period: float, duration: float | None) -> None:
        if not 0 < period < math.inf:
            raise ConfigError(f"refresh must be a positive number of seconds, got {period!r}")
        if duration is not None and not 0 <= duration <= math.inf:
            raise ConfigError(f"duration must be >= 0 seconds or None, got {duration!r}")
        self._stopping = stopping
        self._period = period
        self._start = anyio.current_time()
        self._deadline = math.inf if duration is None else self._start + duration
        self._ticks = 0

    async def wait(self) -> bool:
        """Sleep until the next wake-up; False once it is time to stop."""
        elapsed = anyio.current_time() - self._start
        self._ticks = max(self._ticks + 1, math.floor(elapsed / self._period) + 1)
        until = min(self._start + self._ticks * self._period, self._deadline)
        with anyio.CancelScope(deadline=until):
            await self._stopping.wait()
        return not self._stopping.is_set() and anyio.current_time() < self._deadline
