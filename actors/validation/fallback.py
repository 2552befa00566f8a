"""The rare exact paths behind the fast ones: a refused frame, a near-boundary spike.

Each frame is first decoded with the typed msgspec decoder (the fast path). If
that fails -- one bad item fails the whole frame -- the arguments are decoded
as plain JSON and every item is *sanitised* into the same typed item, an
invalid field replaced by a sentinel that fails exactly that field's rule (a
NaN price, a zero/negative volume, an empty timestamp). So both paths share one
judging loop and cannot disagree.

The spike rule compares the relative deviation in floats; only a deviation
within a hair of the limit comes here, to be settled exactly on the decimals
as written, so 100 -> 150 passes at 50 % and 0.3 -> 0.45 does too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any, TypeVar

from protocols.gateway import DepthItem, DomType, QuoteItem, TradeTick

T = TypeVar("T")

_NAN = math.nan


def spike_exceeds(price: float, last: float, limit: float) -> bool:
    """Settle a near-boundary spike exactly, on the decimals as written (``repr``)."""
    return abs(Fraction(repr(price)) / Fraction(repr(last)) - 1) > Fraction(repr(limit))


def _loads(raw: Any) -> Any:
    """Plain JSON, ``NaN``/``Infinity`` allowed so they are judged, not fatal; else ``_BAD``."""
    try:
        return json.loads(bytes(raw))
    except (ValueError, TypeError, RecursionError):
        return _BAD


_BAD = object()


def _price(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            return _NAN
    return _NAN


def _optional_price(value: Any) -> float | None:
    return None if value is None else _price(value)


def _count(value: Any) -> int:
    return value if type(value) is int else -1


def _text(value: Any) -> str:
    return value if type(value) is str else ""


def fallback(
    raw: Any, counts: dict[str, int], kind: str, sanitise: Callable[[dict[str, Any]], T]
) -> tuple[str, list[T]] | None:
    """The slow path: ``[contract, payload]`` as plain JSON, each object item sanitised.

    Items that are not objects are counted as ``<kind>_rejected.malformed``; a
    frame of the wrong shape gives None (the caller counts it).
    """
    args = _loads(raw)
    if type(args) is not list or len(args) != 2 or type(args[0]) is not str or not args[0]:
        return None
    payload = args[1]
    items: list[T] = []
    for item in payload if type(payload) is list else [payload]:
        if type(item) is dict:
            items.append(sanitise(item))
        else:
            counts[f"{kind}_rejected.malformed"] += 1
    return args[0], items


def sanitised_trade(raw: dict[str, Any]) -> TradeTick:
    return TradeTick(
        price=_price(raw.get("price")),
        timestamp=_text(raw.get("timestamp")),
        type=_count(raw.get("type")),
        volume=_count(raw.get("volume")),
    )


def sanitised_quote(raw: dict[str, Any]) -> QuoteItem:
    def optional_text(value: Any) -> str | None:
        return None if value is None else _text(value)

    volume = raw.get("volume")
    return QuoteItem(
        last_price=_optional_price(raw.get("lastPrice")),
        best_bid=_optional_price(raw.get("bestBid")),
        best_ask=_optional_price(raw.get("bestAsk")),
        volume=None if volume is None else _count(volume),
        last_updated=optional_text(raw.get("lastUpdated")),
        timestamp=optional_text(raw.get("timestamp")),
    )


def sanitised_depth(raw: dict[str, Any]) -> DepthItem:
    kind = _count(raw.get("type"))
    if kind == DomType.RESET:  # price and volumes mean nothing (0 or null)
        return DepthItem(_text(raw.get("timestamp")), kind, 0.0, 0, 0)
    return DepthItem(
        timestamp=_text(raw.get("timestamp")),
        type=_count(raw.get("type")),
        price=_price(raw.get("price")),
        volume=_count(raw.get("volume")),
        current_volume=_count(raw.get("currentVolume")),
    )
