"""Hub sessions, sans-IO: what each invocation means and what comes back."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from protocols import gateway as gw
from protocols import signalr
from pxnode.sim.account import DemoAccounts
from pxnode.sim.hubs import HubSession, malformed_frames, oversize_frame, route
from pxnode.sim.market import MarketSim

START = 1_764_000_000.0
MNQ = "CON.F.US.MNQ.Z25"


class Pair:
    """A HubSession and a client codec talking through bytes."""

    def __init__(self, hub: str = "market", handshake: bool = True, **options: Any) -> None:
        self.sim = MarketSim(1, rate=200, start=START)
        self.sim.advance(START + 1)
        self.session = HubSession(
            hub,  # type: ignore[arg-type]
            self.sim,
            DemoAccounts(START),
            max_message_size=4096,
            **options,
        )
        self.client = signalr.SignalRConnection(signalr.Role.CLIENT, max_message_size=1 << 24)
        if handshake:
            assert self.say(signalr.HandshakeRequest()) == [signalr.HandshakeResponse()]

    def say(self, event: Any) -> list[Any]:
        return self.raw(self.client.send(event))

    def raw(self, data: bytes) -> list[Any]:
        reply = self.session.receive(data)
        if reply:  # b"" would tell the client codec the stream ended
            self.client.receive_data(reply)
        out = []
        while (event := self.client.next_event()) not in (signalr.NEED_DATA, signalr.CLOSED):
            out.append(event)
        return out

    def call(self, target: str, *args: Any, invocation_id: str | None = "1") -> list[Any]:
        return self.say(signalr.Invocation(target, args, invocation_id))


def test_subscribe_quotes_completes_then_snapshots() -> None:
    pair = Pair()
    completion, quote = pair.call("SubscribeContractQuotes", MNQ)
    assert completion == signalr.Completion("1")
    assert quote.target == "GatewayQuote"
    contract, payload = gw.QUOTE_ARGS.decode(quote.arguments)
    assert contract == MNQ and payload == pair.sim.quote(MNQ)
    assert pair.session.wants("quotes", MNQ) and not pair.session.wants("trades", MNQ)


def test_depth_snapshot_and_trades_without_replay() -> None:
    pair = Pair()
    _, depth = pair.call("SubscribeContractMarketDepth", MNQ)
    assert gw.DEPTH_ARGS.decode(depth.arguments)[1] == pair.sim.depth(MNQ)
    assert pair.call("SubscribeContractTrades", MNQ) == [signalr.Completion("1")]
    assert pair.call("SubscribeContractTrades", MNQ, invocation_id=None) == []


def test_unsubscribe_stops_routing() -> None:
    pair = Pair()
    pair.call("SubscribeContractTrades", MNQ)
    events = pair.sim.advance(START + 2)
    routed = dict(route(events, [pair.session]))
    frames = routed[pair.session]
    assert frames and all(b'"GatewayTrade"' in f and MNQ.encode() in f for f in frames)
    pair.call("UnsubscribeContractTrades", MNQ)
    assert dict(route(pair.sim.advance(START + 3), [pair.session])) == {}


@pytest.mark.parametrize(
    ("target", "args", "error"),
    [
        ("SubscribeEverything", (MNQ,), "Unknown hub method"),
        ("SubscribeContractTrades", (), "Invalid arguments"),
        ("SubscribeContractTrades", (MNQ, MNQ), "Invalid arguments"),
        ("SubscribeContractTrades", (5,), "Invalid arguments"),
        ("SubscribeContractTrades", (None,), "Invalid arguments"),
        ("SubscribeContractTrades", ("CON.F.US.NOPE",), "Unknown contract"),
        ("SubscribeAccounts", (), "Unknown hub method"),  # a user method on the market hub
    ],
)
def test_bad_invocations_get_an_error_completion(
    target: str, args: tuple[Any, ...], error: str
) -> None:
    pair = Pair()
    (completion,) = pair.call(target, *args)
    assert isinstance(completion, signalr.Completion) and error in (completion.error or "")
    assert pair.call(target, *args, invocation_id=None) == []  # fire-and-forget: silence
    assert not pair.session.subscriptions.get("trades")


def test_bad_frames_are_counted_and_skipped() -> None:
    pair = Pair()
    frames = malformed_frames(8, MNQ)  # what the sim sends clients, thrown back at it
    for frame in frames:
        pair.raw(frame)
    pair.raw(b"x" * 5000 + signalr.RECORD_SEPARATOR)  # over max_message_size
    assert pair.session.bad_messages == 4 and not pair.session.done
    assert pair.call("SubscribeContractTrades", MNQ) == [signalr.Completion("1")]


def test_stream_invocations_are_refused() -> None:
    pair = Pair()
    (completion,) = pair.say(signalr.StreamInvocation("1", "StreamTrades", []))
    assert "not supported" in completion.error


def test_unsupported_protocol_is_refused() -> None:
    pair = Pair(handshake=False)
    (response,) = pair.say(signalr.HandshakeRequest("messagepack", 1))
    assert response.error and pair.session.done


def test_garbage_before_the_handshake_ends_the_session() -> None:
    pair = Pair(handshake=False)
    pair.session.receive(b"hello\x1e")
    assert pair.session.done and pair.session.failed


def test_client_close_ends_the_session_and_server_close_is_a_frame() -> None:
    pair = Pair()
    closing = pair.session.close("bye", allow_reconnect=True)
    assert msgspec.json.decode(closing[:-1]) == {"type": 7, "error": "bye", "allowReconnect": True}
    assert pair.session.done and pair.session.close("again") == b""
    other = Pair()
    other.say(signalr.Close())
    assert other.session.done


def test_user_hub_snapshots() -> None:
    pair = Pair("user")
    _, account = pair.call("SubscribeAccounts")
    (payload,) = msgspec.json.decode(account.arguments, type=tuple[gw.UserAccount])
    assert payload.id == 7001 and account.target == "GatewayUserAccount"
    _, order = pair.call("SubscribeOrders", 7001)
    (raw,) = msgspec.json.decode(order.arguments, type=tuple[msgspec.Raw])
    wrapped = gw.decode_user_event(gw.UserOrder, raw)
    assert wrapped.action == 1 and wrapped.data.id == 9002
    _, position = pair.call("SubscribePositions", 7001)
    (raw,) = msgspec.json.decode(position.arguments, type=tuple[msgspec.Raw])
    assert gw.decode_user_event(gw.UserPosition, raw).data.size == 2
    _, trade = pair.call("SubscribeTrades", 7001)
    (raw,) = msgspec.json.decode(trade.arguments, type=tuple[msgspec.Raw])
    assert gw.decode_user_event(gw.UserTrade, raw).action is None  # bare
    assert pair.call("SubscribeOrders", 1) == [signalr.Completion("1")]  # someone else's: nothing
    (bad,) = pair.call("SubscribeOrders", "7001")
    assert "Invalid arguments" in bad.error
    assert dict(route(pair.sim.advance(START + 2), [pair.session])) == {}  # no market data


def test_like_the_real_gateway_the_user_hub_can_send_no_snapshot() -> None:
    pair = Pair("user", user_snapshot=False)
    assert pair.call("SubscribeAccounts") == [signalr.Completion("1")]
    for method in ("SubscribeOrders", "SubscribePositions", "SubscribeTrades"):
        assert pair.call(method, 7001) == [signalr.Completion("1")]
    assert pair.session.wants("orders", 7001)  # later changes are still sent


def test_oversize_frame_is_one_valid_frame_of_at_least_the_size() -> None:
    sim = MarketSim(1, rate=50, start=START)
    frame = oversize_frame(100_000, MNQ, sim)
    assert len(frame) >= 100_000 and frame.count(signalr.RECORD_SEPARATOR) == 1
    call = msgspec.json.decode(frame[:-1], type=signalr.Invocation)
    contract, levels = gw.DEPTH_ARGS.decode(call.arguments)
    assert contract == MNQ and isinstance(levels, list) and len(levels) > 100


def test_malformed_frames_cycle_through_every_kind() -> None:
    frames = malformed_frames(16, MNQ)
    assert len(set(frames)) == 8 and all(f.endswith(signalr.RECORD_SEPARATOR) for f in frames)
    client = signalr.SignalRConnection(signalr.Role.CLIENT)
    client.send(signalr.HandshakeRequest())
    client.receive_data(b"{}\x1e" + b"".join(frames[:8]))
    assert client.next_event() == signalr.HandshakeResponse()
    kinds = [client.next_event() for _ in range(8)]
    assert sum(isinstance(k, signalr.BadMessage) for k in kinds) >= 3
    assert sum(isinstance(k, signalr.Invocation) for k in kinds) >= 3  # well-framed, bad inside
