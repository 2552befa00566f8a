"""The hub vocabulary: method tables complete and consistent, messages typed on the wire."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from protocols.hubs import (
    ACCOUNT_KINDS,
    ACCOUNT_METHODS,
    ACCOUNT_WIDE,
    HUBS,
    MARKET_KINDS,
    MARKET_METHODS,
    Connected,
    Disconnected,
    HeartbeatMeasured,
    ReconnectRequested,
    SubscribeAccount,
    SubscribeContract,
    UnsubscribeAccount,
    UnsubscribeContract,
)

HubMessage = (
    SubscribeContract
    | UnsubscribeContract
    | SubscribeAccount
    | UnsubscribeAccount
    | ReconnectRequested
    | Connected
    | Disconnected
    | HeartbeatMeasured
)
DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(HubMessage)


def test_every_kind_has_a_subscribe_and_an_unsubscribe_method() -> None:
    assert HUBS == ("market", "user")
    assert set(MARKET_METHODS) == set(MARKET_KINDS)
    assert set(ACCOUNT_METHODS) == set(ACCOUNT_KINDS)
    assert ACCOUNT_WIDE.issubset(ACCOUNT_KINDS)
    for subscribe, unsubscribe in [*MARKET_METHODS.values(), *ACCOUNT_METHODS.values()]:
        assert unsubscribe == "Un" + subscribe[0].lower() + subscribe[1:]
    names = [m for pair in [*MARKET_METHODS.values(), *ACCOUNT_METHODS.values()] for m in pair]
    assert len(names) == len(set(names))


def test_commands_default_to_every_kind() -> None:
    assert SubscribeContract("C").kinds == MARKET_KINDS
    assert UnsubscribeAccount(1).kinds == ACCOUNT_KINDS


@pytest.mark.parametrize(
    "message",
    [
        SubscribeContract("CON.F.US.MNQ.Z25", ("trades",)),
        UnsubscribeContract("CON.F.US.MNQ.Z25"),
        SubscribeAccount(7, ("orders", "positions")),
        UnsubscribeAccount(7),
        ReconnectRequested("market", "stale feed"),
        Connected("user", "abc"),
        Connected("market"),
        Disconnected("market", "EOF"),
        HeartbeatMeasured("user", 0.012),
    ],
)
def test_messages_round_trip_tagged_and_frozen(message: Any) -> None:
    encoded = msgspec.json.encode(message)
    assert msgspec.json.decode(encoded)["type"] == type(message).__name__
    assert DECODER.decode(encoded) == message
    with pytest.raises(AttributeError):
        message.hub = "user"


@pytest.mark.parametrize(
    "wire",
    [
        b'{"type":"SubscribeContract","contract":"C","kinds":["candles"]}',
        b'{"type":"SubscribeContract","contract":7}',
        b'{"type":"SubscribeAccount","account_id":"7"}',
        b'{"type":"ReconnectRequested","hub":"options","reason":"x"}',
        b'{"type":"HeartbeatMeasured","hub":"market","rtt":"fast"}',
        b'{"type":"Connected"}',
    ],
)
def test_wrong_shapes_do_not_decode(wire: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        DECODER.decode(wire)
