"""The bar table: its columns, and the last bars of a series as a polars DataFrame.

Apart from the actor because this is where polars is touched, and only on
first use, not with the node: it is a third of a replay's memory, and a replay
needs it only to write its output at the end. ``pxnode.replay`` and
``pxnode.chart`` take the schema from here without the actor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .book import Series, by_start

if TYPE_CHECKING:
    import polars as pl


def bar_schema() -> dict[str, Any]:
    """The bar table's columns and their polars types."""
    import polars as pl

    return {
        "contract": pl.String,
        "timeframe": pl.String,
        "start": pl.Datetime("us", "UTC"),
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume": pl.Int64,
        "trades": pl.Int64,
    }


def bars_frame(series: Series | None, n: int) -> pl.DataFrame:
    """The last ``n`` bars of ``series``, closed then forming (empty if none)."""
    import polars as pl

    schema = bar_schema()
    n = n if isinstance(n, int) else 0
    if series is None or n <= 0:
        return pl.DataFrame(schema=schema)
    # by start: a forming bar may be older than closed ones (a late trade into a
    # bar never seen, a live bar a back-fill left forming)
    aggs = sorted([*series.closed, *series.forming.values()], key=by_start)[-n:]
    columns = {
        "contract": [series.contract] * len(aggs),
        "timeframe": [series.timeframe] * len(aggs),
        "start": [a.start for a in aggs],
        "open": [a.open for a in aggs],
        "high": [a.high for a in aggs],
        "low": [a.low for a in aggs],
        "close": [a.close for a in aggs],
        "volume": [a.volume for a in aggs],
        "trades": [a.trades for a in aggs],
    }
    frame = pl.DataFrame(columns, schema={**schema, "start": pl.Int64})
    return frame.with_columns(pl.col("start").cast(schema["start"]))
