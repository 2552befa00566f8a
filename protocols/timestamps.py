"""ISO 8601 timestamps from the gateway as integer microseconds since the epoch.

Integers make every time rule exact (a threshold passes at exactly its value
and fails one microsecond later), and the conversion runs once per tick, so
it must be cheap: see ``TimestampParser``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

_EPOCH = datetime(1970, 1, 1)
_fromisoformat = datetime.fromisoformat
_ONE_US = timedelta(microseconds=1)
_NOTHING = object()  # equal to no text


class TimestampParser:
    """ISO 8601 text -> integer microseconds since the epoch, exact and fast.

    ``datetime.fromisoformat`` (C, every ISO 8601 form since 3.11) validates the
    whole string and truncates a 7-digit .NET fraction to µs; what is slow is
    turning its result into an integer. But the first 19 characters
    (``YYYY-MM-DDTHH:MM:SS``) repeat for every tick of a second, so their value
    is cached, and a known offset is a dict hit: one call, one slice, two
    lookups per timestamp. No offset means UTC.
    """

    __slots__ = ("_heads", "_last", "_last_us", "_offsets")
    _MAX_HEADS = 4096
    _MAX_OFFSETS = 64

    def __init__(self) -> None:
        self._heads: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> µs, read as UTC
        self._offsets: dict[tzinfo, int] = {}  # fromisoformat's tzinfo -> µs east of UTC
        # The items of one gateway message mostly share one stamp: the last text parsed
        # and its value answer a repeat with one string compare.
        self._last: object = _NOTHING
        self._last_us = 0

    def parse(self, text: str) -> int | None:
        if text == self._last:
            return self._last_us
        try:
            moment = _fromisoformat(text)
        except (ValueError, TypeError):
            return None
        us = self._lookup(text, moment)
        self._last, self._last_us = text, us
        return us

    def _lookup(self, text: str, moment: datetime) -> int:
        head = self._heads.get(text[:19])
        if head is not None:
            zone = moment.tzinfo
            if zone is UTC or zone is None:
                return head + moment.microsecond
            offset = self._offsets.get(zone)
            if offset is not None:
                return head + moment.microsecond - offset
        return self._convert(text, moment)

    def _convert(self, text: str, moment: datetime) -> int:
        """The exact conversion; it teaches the caches what ``parse`` may look up."""
        zone, delta = moment.tzinfo, moment.utcoffset()
        offset = 0 if delta is None else delta // _ONE_US
        head = (moment.replace(tzinfo=None, microsecond=0) - _EPOCH) // _ONE_US
        # Only an extended-format prefix fixes the date and time to the second by itself.
        key = text[:19]
        if (
            len(key) == 19  # fromisoformat takes "2025-01-21" and "2025-01-21T14:30" too
            and key.isascii()
            and key[4] == key[7] == "-"
            and key[10] == "T"
            and key[13] == key[16] == ":"
        ):
            if len(self._heads) >= self._MAX_HEADS:
                self._heads.clear()
            self._heads[key] = head
        if zone is not None and zone is not UTC and len(self._offsets) < self._MAX_OFFSETS:
            self._offsets[zone] = offset
        return head + moment.microsecond - offset
