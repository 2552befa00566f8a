"""TimestampParser: exact microseconds, the caches never accept what fromisoformat refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.timestamps import TimestampParser

RECV_US = 1737469800_000000  # 2025-01-21T14:30:00Z


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2025-01-21T14:30:00.1234567+00:00", RECV_US + 123456),  # .NET: 7 digits, truncated
        ("2025-01-21T14:29:59.9999999+00:00", RECV_US - 1),  # truncated, never rounded up
        ("2025-01-21T14:30:00Z", RECV_US),
        ("2025-01-21T14:30:00", RECV_US),  # no offset: UTC
        ("2025-01-21T14:30:00.5", RECV_US + 500_000),
        ("2025-01-21T14:30:00.000001Z", RECV_US + 1),
        ("2025-01-21T08:30:00-06:00", RECV_US),
        ("2025-01-21T20:00:00.25+05:30", RECV_US + 250_000),
        ("2025-01-21 14:30:00+00:00", RECV_US),  # other ISO forms go the slow path
        ("20250121T143000Z", RECV_US),
        ("2025-01-21T14:30:00+00:00:01", RECV_US - 1_000_000),
        # shorter than a whole second: never a cache key (they once raised IndexError)
        ("2025-01-21", RECV_US - 52_200_000_000),
        ("2025-01-21T14", RECV_US - 1_800_000_000),
        ("2025-01-21T14:30", RECV_US),
        ("2025-01-21T14:30Z", RECV_US),
        ("2025-01-21T14:30:00.123+00:00", RECV_US + 123_000),  # the sim's (and gateway's) form
        ("2025-01-21T14:30:00.1234567Z", RECV_US + 123_456),
        ("2025-01-21T14:30:00.+00:00", RECV_US),  # fromisoformat takes a bare dot before a zone
    ],
)
def test_timestamp_forms_convert_exactly(text: str, micros: int) -> None:
    parser = TimestampParser()
    assert parser.parse(text) == micros  # slow path, teaches the caches
    assert parser.parse(text) == micros  # fast path


@pytest.mark.parametrize(
    "text",
    [
        "2025-01-21T14:30:00.\u0661\u0662Z",  # non-ASCII digits
        "2025-01-21T14:30:00._5Z",
        "2025-01-21T14:30:00.-5Z",
        "2025-01-21T14:30:00.5+5:30",
        "2025-01-21T14:30:00.5ZZ",
        "2025-01-21T14:30:00.5 Z",
        "2025-01-21T14:30:00+0\u0665:00",
        "2025-01-21T14:30:00.5+00:00+00:00",
        "2025-01-21T14:30:00.5 +00:00",
        "2025-01-21T14:30:00.\u00b9Z",  # a digit to str.isdigit, not to fromisoformat
    ],
)
def test_warm_caches_never_accept_what_fromisoformat_refuses(text: str) -> None:
    parser = TimestampParser()
    assert parser.parse("2025-01-21T14:30:00.1+05:30") is not None
    assert parser.parse("2025-01-21T14:30:00.1Z") is not None
    assert parser.parse(text) is None


def reference_micros(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    offset=st.none() | st.just("Z") | st.integers(-1439, 1439),
    extra=st.text("0123456789", max_size=3),
    warm=st.booleans(),
)
def test_timestamp_parser_agrees_with_fromisoformat(
    moment: datetime, offset: int | str | None, extra: str, warm: bool
) -> None:
    if isinstance(offset, int):
        sign = "+" if offset >= 0 else "-"
        zone = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    else:
        zone = offset or ""
    fraction = f".{moment.microsecond:06d}{extra}".rstrip("0") if moment.microsecond else ""
    text = moment.replace(microsecond=0).isoformat() + fraction + zone
    parser = TimestampParser()
    if warm:  # the same second and zone already cached: exercises the fast path
        parser.parse(moment.replace(microsecond=0).isoformat() + zone)
    assert parser.parse(text) == parser.parse(text) == reference_micros(text)


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(
        st.sampled_from(
            [
                "2025-01-21T14:30:00.1Z",
                "2025-01-21T14:30:00.1+05:30",
                "2025-01-21T14:30:00.2-06:00",  # the same head in other zones
                "2025-01-21T14:30:00.3",
                "2025-01-21T14:30:00.4+00:00",
                "2025-01-21T14:30",  # a head's prefix, never a head
                "2025-01-21T14:30:01Z",
                "2025-01-21T14:30:00.5ZZ",
                "",
                None,
                5,
            ]
        ),
        max_size=16,
    )
)
def test_a_repeated_text_gets_the_answer_a_fresh_parser_gives(texts: list[object]) -> None:
    """Any order of heads, zones and repeats: the last head and text never leak into a value."""
    parser = TimestampParser()
    for text in texts:
        assert parser.parse(text) == TimestampParser().parse(text)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    zone=st.sampled_from(["", "Z", "+00:00", "-05:00"]),
    cut=st.integers(0, 40),
    warm=st.booleans(),
)
def test_every_prefix_of_a_timestamp_parses_as_fromisoformat_does_or_not_at_all(
    moment: datetime, zone: str, cut: int, warm: bool
) -> None:
    """A cut-off timestamp is hostile input the caches must not trip over (found: IndexError)."""
    full = moment.isoformat(timespec="microseconds") + zone
    text = full[:cut]
    try:
        expected: int | None = reference_micros(text)
    except ValueError:
        expected = None
    parser = TimestampParser()
    if warm:
        parser.parse(full)
    assert parser.parse(text) == parser.parse(text) == expected
