"""The stream schema: exact times, safe subjects, tagged payloads any language can read."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.messages import Bar, DepthAccepted, DepthLevel, QuoteAccepted, Trade
from protocols.stream import (
    DECODER,
    ENCODER,
    StreamBar,
    StreamDepth,
    StreamQuote,
    StreamTrade,
    bar_subject,
    iso_us,
    stream_bar,
    stream_depth,
    stream_quote,
    stream_trade,
    subject_tokens,
    trade_subject,
)
from protocols.timestamps import TimestampParser

MNQ = "CON.F.US.MNQ.Z25"


@given(st.integers(min_value=0, max_value=4_102_444_800_000_000))  # 1970 .. 2100
def test_iso_us_round_trips_exactly(us: int) -> None:
    text = iso_us(us)
    assert text.endswith("Z") and len(text) == 27
    assert TimestampParser().parse(text) == us


def test_subjects_keep_contract_dots_and_replace_what_a_subject_cannot_hold() -> None:
    assert trade_subject(MNQ) == "px.trade.CON.F.US.MNQ.Z25"
    assert bar_subject("1min", MNQ) == "px.bar.1min.CON.F.US.MNQ.Z25"
    assert subject_tokens("a b.*.>..") == "a_b._._._._"


@given(st.text(max_size=40))
def test_any_contract_makes_a_valid_subject(contract: str) -> None:
    tokens = trade_subject(contract).split(".")
    assert all(tokens) and all(t not in ("*", ">") for t in tokens)
    assert not any(c.isspace() for c in trade_subject(contract))


def test_payloads_are_tagged_json_with_snake_case_fields() -> None:
    trade = Trade(MNQ, 1_764_000_000_123_456, 21000.25, 3, 1, 1_764_000_000.5)
    data = ENCODER.encode(stream_trade(trade))
    assert json.loads(data) == {
        "kind": "trade",
        "contract": MNQ,
        "ts": "2025-11-24T16:00:00.123456Z",
        "price": 21000.25,
        "volume": 3,
        "side": 1,
        "received_at": 1_764_000_000.5,
    }
    assert DECODER.decode(data) == stream_trade(trade)


def test_every_kind_decodes_to_its_own_type() -> None:
    quote = QuoteAccepted(MNQ, 5, 1.0, last=2.0, bid=1.75, ask=2.25)
    depth = DepthAccepted(MNQ, 1.0, [DepthLevel(5, 1, 2.0, 3, 3)])
    bar = Bar(MNQ, "1min", 60_000_000, 1.0, 2.0, 0.5, 1.5, 10, 4, "merged")
    payloads = [stream_quote(quote), stream_depth(depth), stream_bar(bar, "closed")]
    decoded = [DECODER.decode(ENCODER.encode(p)) for p in payloads]
    assert [type(d) for d in decoded] == [StreamQuote, StreamDepth, StreamBar]
    assert decoded == payloads
    assert json.loads(ENCODER.encode(payloads[2]))["start"] == "1970-01-01T00:01:00.000000Z"


def test_a_payload_of_another_shape_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        DECODER.decode(b'{"kind":"trade","contract":"x"}')
    with pytest.raises(msgspec.DecodeError):
        DECODER.decode(b'{"kind":"order"}')
    assert isinstance(
        DECODER.decode(ENCODER.encode(StreamTrade("c", "t", 1.0, 1, 0, 0.0))), StreamTrade
    )
