"""``pxnode chart``: the bars of a replay as one self-contained HTML candlestick chart.

The chart is inline SVG drawn here, not a charting library from a CDN: the file
opens offline, in any browser, years later, and renders the same everywhere
(no script runs; each candle's numbers are its SVG ``<title>`` tooltip).
Candles take the price pane, volume the pane below; a close at or above the
open is an up candle (green), below it a down candle (red).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from actors.bars import bar_schema
from protocols.errors import ConfigError, PxError

UP = "#16a34a"
DOWN = "#dc2626"
WIDTH, HEIGHT = 1200, 720
LEFT, RIGHT, TOP = 64, 90, 48
PRICE_BOTTOM = 520
VOLUME_TOP, VOLUME_BOTTOM = 548, 680
PRICE_TICKS = 8
TIME_TICKS = 6


def read_bars(path: Path) -> pl.DataFrame:
    """A replay output (``.parquet`` or ``.csv``) as the replay's table (``PxError`` if not)."""
    schema = bar_schema()
    try:
        csv = path.suffix == ".csv"
        frame = pl.read_csv(path, infer_schema=False) if csv else pl.read_parquet(path)
        missing = [name for name in schema if name not in frame.columns]
        if missing:
            raise PxError(f"{str(path)!r} is not a replay output: no {', '.join(missing)} column")
        if csv:
            frame = frame.with_columns(pl.col("start").str.to_datetime(time_zone="UTC"))
        frame = frame.select(pl.col(name).cast(kind) for name, kind in schema.items())
    except (OSError, pl.exceptions.PolarsError) as error:
        why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PxError(f"cannot read bars {str(path)!r}: {why}") from None
    prices = ("open", "high", "low", "close")
    bad = frame.filter(~pl.all_horizontal(pl.col(c).is_finite() for c in prices))
    if bad.height:  # a replay writes none; another tool or a hand edit may
        start = bad["start"][0]
        raise PxError(f"{str(path)!r} has a bar with a price that is not a number ({start})")
    return frame


def select_series(frame: pl.DataFrame, contract: str | None, timeframe: str | None) -> pl.DataFrame:
    """The bars of one contract and timeframe; either may be left out when there is only one."""
    contract = _pick(frame, "contract", contract)
    frame = frame.filter(pl.col("contract") == contract)
    timeframe = _pick(frame, "timeframe", timeframe)
    return frame.filter(pl.col("timeframe") == timeframe).sort("start")


def _pick(frame: pl.DataFrame, column: str, wanted: str | None) -> str:
    present = sorted(frame[column].unique().to_list())
    if wanted is not None and wanted in present:
        return wanted
    if wanted is None and len(present) == 1:
        return str(present[0])
    if not present:
        raise ConfigError("no bars to chart")
    choices = ", ".join(present)
    if wanted is None:
        raise ConfigError(f"several of column {column!r}, give --{column}: {choices}")
    raise ConfigError(f"no bars of {column} {wanted!r}; there are {choices}")


def render_chart(frame: pl.DataFrame) -> str:
    """The bars of one series (sorted by start) as a whole HTML document."""
    rows = frame.select("start", "open", "high", "low", "close", "volume").rows()
    contract, timeframe = frame["contract"][0], frame["timeframe"][0]
    low: float = min(row[3] for row in rows)
    high: float = max(row[2] for row in rows)
    if high == low:
        high, low = high + 0.5, low - 0.5
    top_volume = max(max(row[5] for row in rows), 1)
    step = (WIDTH - LEFT - RIGHT) / len(rows)
    body = max(1.0, min(step * 0.7, step - 2.0))

    def y(price: float) -> float:
        return TOP + (high - price) / (high - low) * (PRICE_BOTTOM - TOP)

    shapes: list[str] = []
    for index, (start, open_, high_, low_, close, volume) in enumerate(rows):
        colour = UP if close >= open_ else DOWN
        middle = LEFT + step * (index + 0.5)
        top, bottom = y(max(open_, close)), y(min(open_, close))
        volume_top = VOLUME_BOTTOM - volume / top_volume * (VOLUME_BOTTOM - VOLUME_TOP)
        tip = html.escape(
            f"{_time(start)}  O {open_:g}  H {high_:g}  L {low_:g}  C {close:g}  V {volume:,}"
        )
        shapes.append(
            f'<g fill="{colour}" stroke="{colour}"><title>{tip}</title>'
            f'<line x1="{middle:.1f}" x2="{middle:.1f}" y1="{y(high_):.1f}" y2="{y(low_):.1f}"/>'
            f'<rect x="{middle - body / 2:.1f}" y="{top:.1f}" width="{body:.1f}" '
            f'height="{max(bottom - top, 1.0):.1f}"/>'
            f'<rect x="{middle - body / 2:.1f}" y="{volume_top:.1f}" width="{body:.1f}" '
            f'height="{max(VOLUME_BOTTOM - volume_top, 1.0):.1f}" stroke="none"/></g>'
        )
    axes = _price_axis(low, high, y) + _time_axis([row[0] for row in rows], step)
    title = html.escape(
        f"{contract} {timeframe} · {len(rows)} bars · {_time(rows[0][0])} to {_time(rows[-1][0])}"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{margin:0;background:#fff;font:13px system-ui,sans-serif;color:#333}}
svg{{display:block;width:100%;height:auto;max-width:{WIDTH}px}}
.axis{{stroke:#ccc}} text{{fill:#555;font-size:12px}}</style></head>
<body><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}"
 shape-rendering="crispEdges" role="img" aria-label="{title}">
<text x="16" y="28" style="font-size:16px;fill:#111">{title}</text>
{"".join(axes)}
{"".join(shapes)}
<text x="{WIDTH - RIGHT + 8}" y="{VOLUME_TOP + 12}">vol {top_volume:,}</text>
</svg></body></html>
"""


def _price_axis(low: float, high: float, y: Callable[[float], float]) -> list[str]:
    step = _nice_step((high - low) / PRICE_TICKS)
    lines = []
    price = math.ceil(low / step) * step
    while price <= high:
        at = y(price)
        lines.append(
            f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{at:.1f}" y2="{at:.1f}"/>'
            f'<text x="{WIDTH - RIGHT + 8}" y="{at + 4:.1f}">{price:.{_decimals(step)}f}</text>'
        )
        price += step
    lines.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
        f'y1="{VOLUME_BOTTOM}" y2="{VOLUME_BOTTOM}"/>'
    )
    return lines


def _time_axis(starts: Sequence[datetime], step: float) -> list[str]:
    every = max(1, math.ceil(len(starts) / TIME_TICKS))
    return [  # the first label starts at its bar: centred, it would run off the left edge
        f'<text x="{LEFT + step * (index + 0.5):.1f}" y="{VOLUME_BOTTOM + 20}" '
        f'text-anchor="{"middle" if index else "start"}">{_time(start)}</text>'
        for index, start in enumerate(starts)
        if index % every == 0
    ]


def _nice_step(raw: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten: a grid a reader can add up."""
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _decimals(step: float) -> int:
    """Just enough decimals to tell grid lines apart (2.5 needs one, 0.25 two)."""
    decimals = 0
    while decimals < 8 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-9:
        decimals += 1
    return decimals


def _time(start: datetime) -> str:
    return start.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
