"""What the dashboard draws: a pure function of one ``DashboardView`` and a terminal size.

Layout, top to bottom: three header lines (health, uptime, trades/s, RSS; each
hub's connection and breaker as separate words, ``market up · breaker ok``;
counts and non-zero rejects by reason), a line per account (balance, each open
position with its P&L marked at the contract's last trade, working orders), the
contract blocks (symbol beside id, last/bid/ask, then one line per timeframe:
sparkline of the closed bars' closes with its price scale and the forming bar's
OHLCV), then one line of internals (the busiest mailboxes) and the newest
events, each shown whole (wrapped, never cut). Contracts come first: the
internals line and the newest event are all the rest is promised, and it only
gets more rows that the contracts left over. Invariants: no line is wider than
``width`` and there are at most ``height`` lines. Nothing is cut silently: a
contract without room for its block gets a one-line summary, contracts without
even that are counted "+N more", and a long line of the upper part ends in "…".
Wider terminals get more contract columns; taller ones more rows. A frame the
node did not answer in time is shown again, marked STALE, rather than stopping
the screen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec
from rich.console import Console, Group, RenderableType
from rich.text import Text

from protocols.health import HealthReport
from protocols.mailboxes import MailboxStatistics
from protocols.messages import Bar

from .sim import contract_symbol
from .snapshot import NodeSnapshot

SPARKS = "▁▂▃▄▅▆▇█"
BREAKER_WORDS = {"closed": ("ok", "green"), "half_open": ("half-open", "yellow")}
"""A closed breaker reads "ok": "closed" next to a hub name reads as "market closed"."""
MAX_CONTRACTS = 12
"""Contracts whose bars are asked for each refresh (more are only counted)."""
MIN_BOTTOM = 2
"""The internals line and the newest event."""
COLUMN_WIDTH = 78
"""Width below which a second column of contract blocks is not worth it."""
_CONSOLE = Console(width=10_000, color_system=None)
"""Measures text for wrapping only; never prints."""


class QuoteView(msgspec.Struct, frozen=True):
    """The newest known value of each field; a partial quote leaves the others as they were."""

    bid: float | None = None
    ask: float | None = None
    last: float | None = None


class SeriesView(msgspec.Struct, frozen=True):
    closes: tuple[float, ...]
    """Close prices of the last closed bars, oldest first."""
    forming: Bar | None


class DashboardView(msgspec.Struct, frozen=True):
    """Everything one frame shows, taken at (almost) one instant."""

    snapshot: NodeSnapshot
    health: HealthReport
    contracts: tuple[str, ...]
    """Every known contract in display order (configured first)."""
    timeframes: tuple[str, ...]
    quotes: dict[str, QuoteView]
    series: dict[str, dict[str, SeriesView]]
    """contract -> timeframe -> bars, for the first ``MAX_CONTRACTS`` contracts."""
    mailboxes: tuple[MailboxStatistics, ...]
    """Busiest first: near full or dropping, then by fill and drops."""
    events: tuple[str, ...]
    """Recent supervision, breaker and connection events, oldest first."""
    stale: str | None = None
    """Why this frame is an old one (the node did not answer in time); None: fresh."""


def sparkline(values: Iterable[float], width: int) -> str:
    """The last ``width`` values as block characters scaled between their min and max.

    A flat series sits at mid height (no move is not a low); a value that is not
    finite is a blank, so one NaN neither breaks nor rescales the line.
    """
    tail = list(values)[-width:] if width > 0 else []
    finite = [v for v in tail if math.isfinite(v)]
    if not finite:
        return " " * len(tail)
    lo, hi = min(finite), max(finite)
    span = hi - lo
    if math.isinf(span):  # extremes of opposite sign: scale halves, which cannot overflow
        lo, hi, tail = lo / 2, hi / 2, [v / 2 for v in tail]
        span = hi - lo
    top = len(SPARKS) - 1
    return "".join(
        " "
        if not math.isfinite(v)
        else SPARKS[top // 2 if span == 0 else round((v - lo) / span * top)]
        for v in tail
    )


def render(view: DashboardView, width: int, height: int = 24) -> RenderableType:
    """The whole screen for a ``width`` x ``height`` terminal (see the module docstring)."""
    width, height = max(width, 1), max(height, 1)
    header = [_status_line(view), _hubs_line(view), _rejects_line(view)]
    header += [_account_line(view, a.id) for a in view.snapshot.accounts[:2]]
    events = [_event_lines(e, width) for e in view.events] or [[Text("no events yet", "dim")]]
    newest = min(len(events[-1]), 3)
    bottom = 1 + newest if height >= len(header) + 1 + MIN_BOTTOM + 1 else 0
    room = height - len(header) - 1 - bottom
    title, body = _contracts(view, width, room)
    upper = [*header, _rule(title, width), *body]
    for line in upper:
        line.no_wrap = True
        line.truncate(width, overflow="ellipsis")
    lines = upper
    if bottom:
        left = height - len(upper) - 1  # what the contracts left over, for events
        shown: list[Text] = []
        for event in reversed(events):
            if len(shown) + len(event) > left:
                break
            shown[:0] = event
        lines = [*upper, _internals(view, width), *(shown or events[-1][:left])]
    return Group(*lines[:height])


def summary_line(view: DashboardView) -> str:
    """The whole state on one plain line (no terminal: pipes, logs, CI)."""
    s = view.snapshot
    hubs = " ".join(f"{hub}={s.breaker[hub]}/{s.reconnects.get(hub, 0)}" for hub in s.breaker)
    rejects = sum(s.trades_rejected.values())
    prices = " ".join(
        f"{contract}={_price(_last(view, contract))}" for contract in view.contracts[:MAX_CONTRACTS]
    )
    more = len(view.contracts) - MAX_CONTRACTS
    accounts = "".join(
        f" balance[{a.name}]={a.balance:.2f}"
        + ("" if a.open_pnl is None else f" pnl[{a.name}]={a.open_pnl:+.2f}")
        for a in s.accounts
    )
    return (
        f"{s.ts[11:19]} up={_uptime(s.uptime_s)} health={s.health_score:.2f} "
        f"trades={s.trades_accepted} rate={s.trades_per_s:.1f}/s rejects={rejects} "
        f"bars={s.bars_closed} drops={s.mailbox_drops} rss={_mib(s.rss_bytes)} {hubs} {prices}"
        + (f" +{more} more" if more > 0 else "")
        + accounts
        + (f" STALE: {view.stale}" if view.stale else "")
    ).rstrip()


def _status_line(view: DashboardView) -> Text:
    s = view.snapshot
    score_style = "green" if s.health_score >= 0.9 else "yellow" if s.health_score >= 0.5 else "red"
    line = Text.assemble(
        ("pxnode ", "bold"),
        ("STALE " if view.stale else "", "bold red"),
        ("● healthy " if s.healthy else "● degraded ", "green" if s.healthy else "red"),
        (f"{s.health_score:.2f}", f"bold {score_style}"),
        f"  up {_uptime(s.uptime_s)}  ",
        (f"{s.trades_per_s:.1f}", "bold"),
        f" trades/s  RSS {_mib(s.rss_bytes)}",
    )
    if view.stale:
        line.append(f"  {view.stale}", "red")
    return line


def _hubs_line(view: DashboardView) -> Text:
    line = Text("hubs")
    for k, (hub, h) in enumerate(view.health.hubs.items()):
        word, style = BREAKER_WORDS.get(h.breaker, (h.breaker, "bold red"))
        line.append(" │ " if k else " ", "dim")
        line.append(f"{hub} ", "bold")
        line.append("up" if h.connected else "down", "green" if h.connected else "bold red")
        line.append(" · breaker ")
        line.append(word, style)
        if h.reconnects:
            line.append(f" · {h.reconnects} reconn")
    if view.health.reasons:
        line.append(" · " + "; ".join(view.health.reasons), "dim")
    return line


def _rejects_line(view: DashboardView) -> Text:
    s = view.snapshot
    line = Text(f"trades {s.trades_accepted:,}  bars {s.bars_closed:,}  rejects")
    reasons = [(r, n) for r, n in s.trades_rejected.items() if n]
    if not reasons:
        line.append(" none", "dim")
    for k, (reason, n) in enumerate(reasons):
        line.append(("," if k else "") + f" {reason} ")
        line.append(f"{n:,}", "yellow")
    return line


def _account_line(view: DashboardView, account_id: int) -> Text:
    """Balance, each open position with its P&L marked at the last trade, working orders."""
    s = view.snapshot
    account = next(a for a in s.accounts if a.id == account_id)
    line = Text.assemble((account.name, "bold"), f" balance {account.balance:,.2f}")
    for p in (p for p in s.positions if p.account_id == account_id):
        line.append(f" · {p.symbol} {p.side} {p.size} @ {_price(p.average_price)} P&L ")
        pnl = p.open_pnl if p.open_pnl is not None else p.open_pnl_points
        unit = "" if p.open_pnl is not None else " pts"
        style = "green" if (pnl or 0) > 0 else "red" if (pnl or 0) < 0 else ""
        line.append("—" if pnl is None else f"{pnl:+,.2f}{unit}", style)
    orders = sum(o.account_id == account_id for o in s.orders)
    line.append(f" · {orders} order" + ("" if orders == 1 else "s"))  # working ones
    return line


def _contracts(view: DashboardView, width: int, room: int) -> tuple[str, list[Text]]:
    """As many contracts as fit, as many of them as full blocks as possible, in columns.

    Only ``room`` lines per column: trying every count of full blocks (largest
    first) and keeping the one that shows the most contracts is cheap at this size.
    """
    block = 1 + len(view.timeframes)
    n = len(view.contracts)
    columns = max(1, min((width + 2) // (COLUMN_WIDTH + 2), -(-n * block // max(room, 1))))
    best: tuple[int, list[int]] = (0, [])
    lowest = 1 if n and block <= room else 0  # the first contract in full whenever it fits
    for full in range(n, lowest - 1, -1):
        placed = _place([block] * full + [1] * (n - full), columns, room)
        if len(placed) > len(best[1]):
            best = (full, placed)
    full, placed = best
    full = min(full, len(placed))  # blocks are placed first; only those that fit count
    colw = (width - 2 * (columns - 1)) // columns
    items = [_block(view, c, colw) for c in view.contracts[:full]]
    items += [[_compact(view, c, colw)] for c in view.contracts[full : len(placed)]]
    cols: list[list[Text]] = [[] for _ in range(columns)]
    for item, column in zip(items, placed, strict=True):
        cols[column].extend(item)
    shown = len(placed)
    title = f"contracts {shown} of {n}" + (f" · +{n - shown} more" if shown < n else "")
    if columns == 1:
        return title, cols[0]
    rows = []
    for i in range(max(map(len, cols))):
        row = Text()
        for c, col in enumerate(cols):
            cell = col[i].copy() if i < len(col) else Text()
            cell.truncate(colw, overflow="ellipsis", pad=c < columns - 1)
            row.append_text(cell)
            if c < columns - 1:
                row.append("  ")
        rows.append(row)
    return title, rows


def _place(sizes: list[int], columns: int, room: int) -> list[int]:
    """Column of each item, in order, filling one column before the next; stops when full."""
    placed: list[int] = []
    column, used = 0, 0
    for size in sizes:
        while column < columns and used + size > room:
            column, used = column + 1, 0
        if column == columns:
            break
        placed.append(column)
        used += size
    return placed


def _quote_line(view: DashboardView, contract: str) -> Text:
    line = _price_line(view, contract)
    summary = view.snapshot.contracts.get(contract)
    trades = summary.trades if summary else 0
    line.append(f"  {trades:,} trade" + ("" if trades == 1 else "s"))
    return line


def _price_line(view: DashboardView, contract: str) -> Text:
    quote = view.quotes.get(contract, QuoteView())
    return Text.assemble(
        (contract_symbol(contract), "bold cyan"),
        " ",
        (contract, "dim"),
        "  last ",
        (_price(_last(view, contract)), "bold"),
        "  bid ",
        _price(quote.bid),
        "  ask ",
        _price(quote.ask),
    )


def _block(view: DashboardView, contract: str, width: int) -> list[Text]:
    series = [view.series.get(contract, {}).get(tf) for tf in view.timeframes]
    bars = [_ohlcv(s.forming if s else None) for s in series]
    closes = [s.closes if s else () for s in series]
    widest = max((b.cell_len for b in bars), default=0)
    # one sparkline width for the whole block, so the OHLCV columns line up; the scale
    # is the low-high of the closes shown, or only their span where that does not fit
    full = [_scale(c, spans=False) for c in closes]
    spans = [_scale(c, spans=True) for c in closes]
    for scales in (full, spans):
        scale_w = max(map(len, scales), default=0)
        room = min(max(map(len, closes), default=0), width - 8 - widest - 3 - scale_w)
        if room >= 12 or scales is spans:
            break
    lines = [_quote_line(view, contract)]
    for tf, c, scale, bar in zip(view.timeframes, closes, scales, bars, strict=True):
        line = Text(f"  {tf:<6}")
        line.append(f"{sparkline(c, room):<{max(room, 0)}}", "cyan")
        line.append(f" {scale:<{scale_w}}", "dim")
        line.append("  ")
        line.append_text(bar)
        lines.append(line)
    return lines


def _scale(closes: tuple[float, ...], *, spans: bool) -> str:
    """The price range a sparkline spans: ``21032.75..21036.25``, or ``↕3.50``."""
    finite = [c for c in closes if math.isfinite(c)]
    if not finite:
        return ""
    lo, hi = _price(min(finite)), _price(max(finite))
    if not spans:
        return f"{lo}..{hi}"
    decimals = max(len(p.partition(".")[2]) for p in (lo, hi))
    return f"↕{max(finite) - min(finite):.{decimals}f}"


def _compact(view: DashboardView, contract: str, width: int) -> Text:
    line = _price_line(view, contract)
    first = view.series.get(contract, {}).get(view.timeframes[0]) if view.timeframes else None
    if first is not None and first.closes:
        line.append(f"  {view.timeframes[0]} ")
        line.append(sparkline(first.closes, width - line.cell_len), "cyan")
    return line


def _ohlcv(bar: Bar | None) -> Text:
    if bar is None:
        return Text("no bar forming", "dim")
    direction = "green" if bar.close > bar.open else "red" if bar.close < bar.open else ""
    return Text.assemble(
        f"O {_price(bar.open)} H {_price(bar.high)} L {_price(bar.low)} C ",
        (_price(bar.close), f"bold {direction}".strip()),
        f" V {bar.volume:,}",
    )


def _internals(view: DashboardView, width: int) -> Text:
    """Messages dropped by conflating mailboxes, then the busiest mailboxes, as many as fit."""
    drops = view.snapshot.mailbox_drops
    line = Text("internals mailbox drops ", "dim")
    line.append(f"{drops:,}", "red" if drops else "dim")
    for m in view.mailboxes:
        part = Text(" · ")
        part.append(f"{m.name} ")
        part.append(
            f"{_short(m.depth)}/{_short(m.capacity)}", "red" if m.depth >= m.capacity else ""
        )
        if m.dropped:
            part.append(f" dropped {_short(m.dropped)}", "red")
        if line.cell_len + part.cell_len > width:
            break
        line.append_text(part)
    return line


def _event_lines(event: str, width: int) -> list[Text]:
    """One event, whole: wrapped at ``width``, never cut."""
    text = Text(event)
    text.highlight_regex(r"\bopen\b|escalated|failed|disconnected", "bold red")
    text.highlight_regex(r"\bhalf_open\b|restarting", "yellow")
    text.highlight_regex(r"\bclosed\b|connected$|healthy", "green")
    return [line for line in text.wrap(_CONSOLE, width)] or [Text()]


def _rule(title: str, width: int) -> Text:
    head = f"── {title} "
    return Text(head + "─" * max(width - len(head), 0), "dim")


def _last(view: DashboardView, contract: str) -> float | None:
    summary = view.snapshot.contracts.get(contract)
    if summary is not None and summary.last_price is not None:
        return summary.last_price
    return view.quotes.get(contract, QuoteView()).last


def _price(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    text = f"{x:.2f}"
    return text if float(text) == x else repr(x)  # finer ticks (1/32, 0.001) exactly


def _uptime(seconds: float) -> str:
    minutes, sec = divmod(int(max(seconds, 0)), 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    return (f"{days}d" if days else "") + f"{hour:02d}:{minute:02d}:{sec:02d}"


def _short(n: int) -> str:
    """A count in at most 5 characters: 12345 is 12k."""
    value, unit = float(n), ""
    for bigger in "kMGTPE":
        if round(value) < 10_000:
            break
        value, unit = value / 1000, bigger
    return f"{value:.0f}{unit}" if unit else str(n)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
