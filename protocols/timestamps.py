"""ISO 8601 timestamps from the gateway as integer microseconds since the epoch.

Integers make every time rule exact (a threshold passes at exactly its value
and fails one microsecond later), and the conversion runs once per tick, so
it must be cheap: see ``TimestampParser``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo

MAX_FUTURE_S = 86_400.0
"""The furthest a time may lie after its receive time under any config (a day)."""
MAX_AGE_S = 10 * 365 * 86_400.0
"""The furthest a time may lie before it (ten years): beyond these, no exchange's time,
and wall-clock bars of it could not be computed."""

_EPOCH_DAY = datetime(1970, 1, 1).toordinal()
_fromisoformat = datetime.fromisoformat
_ONE_US = timedelta(microseconds=1)
_NOTHING = object()  # equal to no text
_MAX_HEADS = 4096
_MAX_OFFSETS = 64


class TimestampParser:
    """ISO 8601 text -> integer microseconds since the epoch, exact and fast.

    ``datetime.fromisoformat`` (C, every ISO 8601 form since 3.11) validates the
    whole string and truncates a 7-digit .NET fraction to µs; what is slow is
    turning its result into an integer. But the first 19 characters
    (``YYYY-MM-DDTHH:MM:SS``) repeat for every tick of a second, so their value
    is cached, and a known offset is a dict hit. No offset means UTC.

    ``parse`` is a closure over those caches rather than a method: the C parse
    is about a quarter of its time, and lookups on ``self``, a slice and the hash
    of that slice cost more than the rest. A UTC text that starts with the last
    head used (the items of one message, the ticks of one second) takes one
    parse and one ``startswith``; a text equal to the last one, one compare.
    """

    __slots__ = ("parse",)

    parse: Callable[[str], int | None]
    """The text's µs since the epoch, or None if ``fromisoformat`` refuses it."""

    def __init__(self) -> None:
        self.parse = _parser()


def _parser() -> Callable[[str], int | None]:
    heads: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> µs, read as UTC
    offsets: dict[tzinfo, int] = {}  # fromisoformat's tzinfo -> µs east of UTC
    # Invariants: ``last_us`` is the value of the text ``last``; ``head`` is a key
    # ``_convert`` cached (a text that starts with it and parses has exactly that
    # date and time to the second) and ``head_us`` its value; "\0" starts no text.
    last: object = _NOTHING
    last_us = 0
    head = "\0"
    head_us = 0

    def parse(text: str) -> int | None:
        nonlocal last, last_us
        if text == last:
            return last_us
        try:
            moment = _fromisoformat(text)
        except (ValueError, TypeError):
            return None
        zone = moment.tzinfo
        if text.startswith(head) and (zone is UTC or zone is None):
            us = head_us + moment.microsecond
        else:
            us = _lookup(text, moment)
        last, last_us = text, us
        return us

    def _lookup(text: str, moment: datetime) -> int:
        """A new second, or an offset other than UTC: the caches, else the conversion."""
        nonlocal head, head_us
        key = text[:19]
        cached = heads.get(key)
        if cached is not None:
            zone = moment.tzinfo
            offset = 0 if zone is UTC or zone is None else offsets.get(zone)
            if offset is not None:
                head, head_us = key, cached
                return cached + moment.microsecond - offset
        return _convert(text, moment)

    def _convert(text: str, moment: datetime) -> int:
        """The exact conversion; it teaches the caches what ``parse`` may look up."""
        nonlocal head, head_us
        zone, delta = moment.tzinfo, moment.utcoffset()
        offset = 0 if delta is None else delta // _ONE_US
        days = moment.toordinal() - _EPOCH_DAY
        value = ((days * 24 + moment.hour) * 60 + moment.minute) * 60 + moment.second
        value *= 1_000_000
        # Only an extended-format prefix fixes the date and time to the second by itself.
        key = text[:19]
        if (
            len(key) == 19  # fromisoformat takes "2025-01-21" and "2025-01-21T14:30" too
            and key.isascii()
            and key[4] == key[7] == "-"
            and key[10] == "T"
            and key[13] == key[16] == ":"
        ):
            if len(heads) >= _MAX_HEADS:
                heads.clear()
            heads[key] = head_us = value
            head = key
        if zone is not None and zone is not UTC and len(offsets) < _MAX_OFFSETS:
            offsets[zone] = offset
        return value + moment.microsecond - offset

    return parse
