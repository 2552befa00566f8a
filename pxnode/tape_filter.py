"""A window of a tape: only the trades of some contracts and exchange times.

Why it sits in front of the node, not inside it: a filtered replay must give
exactly the bars a tape holding only the chosen trades would give. So the
filter rewrites the tape itself -- a trade frame keeps the items in
``[since, until)`` (by the trade's own exchange timestamp, not the receive
time) of a chosen contract, a frame left with no item is dropped whole -- and
the node downstream never knows. Consequences, on purpose: a bar cut by the
window edge holds only its trades inside the window (partial, as if the tape
began or ended there), and validation starts fresh at the window (its spike
reference is the first trade inside it, as on a tape that begins there).

Quote and depth frames are kept or dropped by contract only (they build no
bars); user-hub frames pass. What cannot be read (arguments of the wrong
shape, an item without a readable timestamp) passes too, so validation counts
it under its usual reason instead of the filter hiding it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from actors.tape import TapeLine
from protocols.errors import ConfigError
from protocols.timestamps import TimestampParser

FILTER_REASONS: Final = ("before_since", "after_until", "contract")


class _Stamped(msgspec.Struct, frozen=True):
    timestamp: str


_FRAME = msgspec.json.Decoder(tuple[str, msgspec.Raw])
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])
_STAMP = msgspec.json.Decoder(_Stamped)
_ENCODER = msgspec.json.Encoder()
_OPEN_BRACKET = 0x5B


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    """Integer µs since the epoch, as validation reads a trade's timestamp."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return (moment - _EPOCH) // timedelta(microseconds=1)


class TapeFilter:
    """Keeps the trades of ``contracts`` (all if None) with exchange time in ``[since, until)``.

    A naive datetime means UTC. Raises ``ConfigError`` for an empty window or
    an empty contract list. ``lines_dropped`` counts tape lines dropped whole,
    ``trades_dropped`` trade items by reason (``FILTER_REASONS``); ``unseen``
    is the chosen contracts of which no market frame was read.
    """

    def __init__(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        contracts: Sequence[str] | None = None,
    ) -> None:
        self._since = None if since is None else _micros(since)
        self._until = None if until is None else _micros(until)
        if self._since is not None and self._until is not None and self._until <= self._since:
            raise ConfigError("until must be after since")
        if contracts is not None and not contracts:
            raise ConfigError("contracts: give at least one contract id")
        self._contracts = None if contracts is None else frozenset(contracts)
        self._timed = since is not None or until is not None
        self._parser = TimestampParser()
        self.unseen: set[str] = set(self._contracts or ())
        self.lines_dropped = 0
        self.trades_dropped = dict.fromkeys(FILTER_REASONS, 0)

    def lines(self, tape: Iterable[list[TapeLine]]) -> Iterator[list[TapeLine]]:
        """``tape`` (chunks of records, as ``read_tape`` yields them) through the filter."""
        for records in tape:
            kept = [kept for record in records if (kept := self._judge(record)) is not None]
            self.lines_dropped += len(records) - len(kept)
            yield kept

    def _judge(self, record: TapeLine) -> TapeLine | None:
        if record.hub != "market":
            return record
        try:
            contract, payload = _FRAME.decode(record.arguments)
        except msgspec.DecodeError:
            return record
        self.unseen.discard(contract)
        trade = record.target == "GatewayTrade"
        if self._contracts is not None and contract not in self._contracts:
            if trade:
                self.trades_dropped["contract"] += _count(payload)
            return None
        if not (trade and self._timed):
            return record
        single = len(payload) == 0 or memoryview(payload)[0] != _OPEN_BRACKET
        try:
            items = [payload] if single else _ITEMS.decode(payload)
        except msgspec.DecodeError:
            return record
        kept = [item for item in items if self._in_window(item)]
        if len(kept) == len(items):
            return record
        if not kept:
            return None
        arguments = msgspec.Raw(_ENCODER.encode([contract, kept]))
        return msgspec.structs.replace(record, arguments=arguments)

    def _in_window(self, item: msgspec.Raw) -> bool:
        try:
            text = _STAMP.decode(item).timestamp
        except msgspec.DecodeError:
            return True
        ts = self._parser.parse(text)
        if ts is None:
            return True
        if self._since is not None and ts < self._since:
            self.trades_dropped["before_since"] += 1
            return False
        if self._until is not None and ts >= self._until:
            self.trades_dropped["after_until"] += 1
            return False
        return True


def _count(payload: msgspec.Raw) -> int:
    if len(payload) == 0 or memoryview(payload)[0] != _OPEN_BRACKET:
        return 1
    try:
        return len(_ITEMS.decode(payload))
    except msgspec.DecodeError:
        return 1
