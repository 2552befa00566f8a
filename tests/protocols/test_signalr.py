"""The SignalR codec, driven client against server in memory (bytes from one's
``send`` go into the other's ``receive_data``), plus raw wire bytes as foreign
SDKs and a misbehaving gateway would send them."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.errors import MessageTooLarge, ProtocolError
from protocols.signalr import (
    CLOSED,
    NEED_DATA,
    RECORD_SEPARATOR,
    BadMessage,
    CancelInvocation,
    Close,
    Completion,
    Event,
    HandshakeRequest,
    HandshakeResponse,
    Invocation,
    Ping,
    Role,
    SignalRConnection,
    State,
    StreamInvocation,
    StreamItem,
)

RS = RECORD_SEPARATOR


def drain(conn: SignalRConnection) -> list[Any]:
    """Every event available now, ending with the NEED_DATA or CLOSED that stopped it."""
    events: list[Any] = []
    while True:
        event = conn.next_event()
        events.append(event)
        if event is NEED_DATA or event is CLOSED:
            return events


def handshake(
    version: int = 1, *, max_message_size: int = 1 << 20
) -> tuple[SignalRConnection, SignalRConnection]:
    client = SignalRConnection(Role.CLIENT, max_message_size=max_message_size)
    server = SignalRConnection(Role.SERVER, max_message_size=max_message_size)
    server.receive_data(client.send(HandshakeRequest("json", version)))
    assert drain(server) == [HandshakeRequest("json", version), NEED_DATA]
    client.receive_data(server.send(HandshakeResponse()))
    assert drain(client) == [HandshakeResponse(), NEED_DATA]
    return client, server


def opened(role: Role, max_message_size: int = 1 << 20) -> SignalRConnection:
    """One end after a handshake with a peer we drive by raw bytes."""
    client, server = handshake(max_message_size=max_message_size)
    return client if role is Role.CLIENT else server


def raw(data: Any) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(data))


# ------------------------------------------------------------------ handshake


@pytest.mark.parametrize("version", [0, 1])
def test_handshake_opens_both_ends(version: int) -> None:
    client = SignalRConnection(Role.CLIENT)
    server = SignalRConnection(Role.SERVER)
    assert (client.state, server.state) == (State.AWAIT_REQUEST, State.AWAIT_REQUEST)
    request = client.send(HandshakeRequest("json", version))
    assert request == b'{"protocol":"json","version":%d}\x1e' % version
    assert client.state is State.AWAIT_RESPONSE
    server.receive_data(request)
    assert drain(server) == [HandshakeRequest("json", version), NEED_DATA]
    assert server.state is State.AWAIT_RESPONSE
    response = server.send(HandshakeResponse())
    assert response == b"{}\x1e"
    client.receive_data(response)
    assert drain(client) == [HandshakeResponse(), NEED_DATA]
    assert (client.state, server.state) == (State.OPEN, State.OPEN)


def test_server_reads_foreign_handshake_with_extra_fields() -> None:
    server = SignalRConnection(Role.SERVER)
    server.receive_data(b'{"protocol":"json","version":1,"minorVersion":0}\x1e')
    assert drain(server) == [HandshakeRequest(), NEED_DATA]


@pytest.mark.parametrize(
    "request_", [HandshakeRequest("messagepack", 1), HandshakeRequest("json", 2)]
)
def test_unsupported_handshake_can_only_be_refused(request_: HandshakeRequest) -> None:
    client = SignalRConnection(Role.CLIENT)
    server = SignalRConnection(Role.SERVER)
    server.receive_data(client.send(request_))
    assert drain(server) == [request_, NEED_DATA]
    assert (server.state, client.state) == (State.AWAIT_REJECTION, State.AWAIT_REJECTION)
    with pytest.raises(ProtocolError):
        server.send(HandshakeResponse())
    assert server.state is State.ERROR


def test_refused_handshake_closes_both_ends() -> None:
    client = SignalRConnection(Role.CLIENT)
    server = SignalRConnection(Role.SERVER)
    server.receive_data(client.send(HandshakeRequest("json", 7)))
    drain(server)
    response = server.send(HandshakeResponse("version 7 is not supported"))
    assert response == b'{"error":"version 7 is not supported"}\x1e'
    assert server.state is State.CLOSED
    client.receive_data(response + b'{"type":6}\x1e')
    assert drain(client) == [HandshakeResponse("version 7 is not supported"), CLOSED]
    assert client.state is State.CLOSED


def test_server_may_refuse_a_supported_handshake() -> None:
    client = SignalRConnection(Role.CLIENT)
    server = SignalRConnection(Role.SERVER)
    server.receive_data(client.send(HandshakeRequest()))
    drain(server)
    client.receive_data(server.send(HandshakeResponse("unauthorized")))
    assert drain(client) == [HandshakeResponse("unauthorized"), CLOSED]


def test_client_must_not_accept_what_it_asked_to_be_refused() -> None:
    client = SignalRConnection(Role.CLIENT)
    client.send(HandshakeRequest("json", 2))
    client.receive_data(b"{}\x1e")
    with pytest.raises(ProtocolError):
        client.next_event()
    assert client.state is State.ERROR


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"",
        b"[]",
        b"{}",
        b'{"protocol":"json"}',
        b'{"protocol":1,"version":1}',
        b'{"protocol":"json","version":"1"}',
        b'{"protocol":"json","version":1.5}',
        b'{"protocol":"json","version":NaN}',
        b"[" * 10_000 + b"]" * 10_000,
    ],
)
def test_bad_handshake_request_is_fatal(frame: bytes) -> None:
    server = SignalRConnection(Role.SERVER)
    server.receive_data(frame + RS)
    with pytest.raises(ProtocolError):
        server.next_event()
    assert server.state is State.ERROR


@pytest.mark.parametrize(
    "frame", [b"nope", b'{"error":5}', b'{"type":6}', b'{"type":1,"target":"x","arguments":[]}']
)
def test_bad_handshake_response_is_fatal(frame: bytes) -> None:
    client = SignalRConnection(Role.CLIENT)
    client.send(HandshakeRequest())
    client.receive_data(frame + RS)
    with pytest.raises(ProtocolError):
        client.next_event()
    assert client.state is State.ERROR


def test_oversize_handshake_is_fatal_and_not_buffered() -> None:
    server = SignalRConnection(Role.SERVER, max_message_size=64)
    server.receive_data(b'{"protocol":"' + b"j" * 100)
    assert len(server._partial) == 0  # white box: dropped, not buffered
    with pytest.raises(MessageTooLarge):
        server.next_event()


def test_server_speaking_first_is_fatal() -> None:
    client = SignalRConnection(Role.CLIENT)
    client.receive_data(b"{}\x1e")
    with pytest.raises(ProtocolError):
        client.next_event()
    assert client.state is State.ERROR


def test_client_must_wait_for_the_response_before_sending() -> None:
    client = SignalRConnection(Role.CLIENT)
    client.send(HandshakeRequest())
    with pytest.raises(ProtocolError):
        client.send(Invocation("SubscribeContractTrades", ["X"]))
    assert client.state is State.ERROR


def test_server_must_answer_before_reading_on() -> None:
    server = SignalRConnection(Role.SERVER)
    server.receive_data(b'{"protocol":"json","version":1}\x1e{"type":6}\x1e')
    assert server.next_event() == HandshakeRequest()
    with pytest.raises(ProtocolError):
        server.next_event()


def test_server_reads_pipelined_messages_after_answering() -> None:
    server = SignalRConnection(Role.SERVER)
    server.receive_data(b'{"protocol":"json","version":1}\x1e{"type":6}\x1e')
    assert server.next_event() == HandshakeRequest()
    server.send(HandshakeResponse())
    assert drain(server) == [Ping(), NEED_DATA]


@pytest.mark.parametrize(
    ("role", "event"),
    [
        (Role.SERVER, Ping()),
        (Role.SERVER, HandshakeRequest()),
        (Role.SERVER, HandshakeResponse()),
        (Role.CLIENT, HandshakeResponse()),
        (Role.CLIENT, Close()),
    ],
)
def test_sending_out_of_turn_before_the_handshake_is_fatal(role: Role, event: Event) -> None:
    conn = SignalRConnection(role)
    with pytest.raises(ProtocolError):
        conn.send(event)
    assert conn.state is State.ERROR


def test_max_message_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SignalRConnection(Role.CLIENT, max_message_size=0)


# ------------------------------------------------------------------- messages


def test_invocation_round_trip_keeps_argument_bytes() -> None:
    client, server = handshake()
    data = client.send(Invocation("SubscribeContractTrades", ["CON.F.US.MNQ.Z25"], "7"))
    assert data == (
        b'{"type":1,"target":"SubscribeContractTrades",'
        b'"arguments":["CON.F.US.MNQ.Z25"],"invocationId":"7"}\x1e'
    )
    server.receive_data(data)
    [event, _] = drain(server)
    assert event == Invocation("SubscribeContractTrades", raw(["CON.F.US.MNQ.Z25"]), "7")
    assert bytes(event.arguments) == b'["CON.F.US.MNQ.Z25"]'


def test_sent_raw_arguments_arrive_byte_for_byte() -> None:
    client, server = handshake()
    arguments = msgspec.Raw(b'[ "C" , {"price" : 1.50, "x":[] } ]')
    client.receive_data(server.send(Invocation("GatewayTrade", arguments)))
    [event, _] = drain(client)
    assert bytes(event.arguments) == bytes(arguments)
    assert event.invocation_id is None


def test_invocation_without_id_omits_it_on_the_wire() -> None:
    _, server = handshake()
    assert server.send(Invocation("GatewayQuote", [])) == (
        b'{"type":1,"target":"GatewayQuote","arguments":[]}\x1e'
    )


@pytest.mark.parametrize(
    ("completion", "wire"),
    [
        (Completion("1"), b'{"type":3,"invocationId":"1"}'),
        (
            Completion("2", result={"ok": True}),
            b'{"type":3,"invocationId":"2","result":{"ok":true}}',
        ),
        (
            Completion("3", error="no such contract"),
            b'{"type":3,"invocationId":"3","error":"no such contract"}',
        ),
    ],
)
def test_completions_round_trip(completion: Completion, wire: bytes) -> None:
    client, server = handshake()
    data = server.send(completion)
    assert data == wire + RS
    client.receive_data(data)
    assert drain(client) == [completion, NEED_DATA]


def test_ping_both_ways() -> None:
    client, server = handshake()
    assert client.send(Ping()) == b'{"type":6}\x1e'
    server.receive_data(client.send(Ping()))
    client.receive_data(server.send(Ping()))
    assert drain(server) == [Ping(), NEED_DATA]
    assert drain(client) == [Ping(), NEED_DATA]
    assert client.state is server.state is State.OPEN


def test_foreign_messages_of_every_type_decode() -> None:
    client = opened(Role.CLIENT)
    client.receive_data(
        b'{"type":1,"target":"GatewayQuote","arguments":["C",{}],"headers":{},"streamIds":[]}\x1e'
        b'{"type":2,"invocationId":"4","item":[1,2]}\x1e'
        b'{"type":3,"invocationId":"5","result":null}\x1e'
        b'{"type":4,"invocationId":"6","target":"Stream","arguments":[1]}\x1e'
        b'{"type":5,"invocationId":"6"}\x1e'
        b'{"type":6,"future":"field"}\x1e'
    )
    assert drain(client) == [
        Invocation("GatewayQuote", msgspec.Raw(b'["C",{}]')),
        StreamItem("4", [1, 2]),
        Completion("5"),
        StreamInvocation("6", "Stream", msgspec.Raw(b"[1]")),
        CancelInvocation("6"),
        Ping(),
        NEED_DATA,
    ]


@pytest.mark.parametrize("sender", [Role.CLIENT, Role.SERVER])
def test_close_with_error_and_reconnect_hint(sender: Role) -> None:
    client, server = handshake()
    source, sink = (client, server) if sender is Role.CLIENT else (server, client)
    data = source.send(Close("server shutting down", allow_reconnect=True))
    assert data == b'{"type":7,"error":"server shutting down","allowReconnect":true}\x1e'
    assert source.state is State.CLOSED
    assert source.next_event() is CLOSED
    sink.receive_data(data + b'{"type":6}\x1e')
    assert drain(sink) == [Close("server shutting down", allow_reconnect=True), CLOSED]
    assert sink.state is State.CLOSED
    with pytest.raises(ProtocolError):
        sink.send(Ping())


def test_plain_close_has_defaults() -> None:
    client = opened(Role.CLIENT)
    client.receive_data(b'{"type":7}\x1e')
    assert drain(client) == [Close(error=None, allow_reconnect=False), CLOSED]


# -------------------------------------------------------------------- framing


def server_stream() -> tuple[bytes, list[Any]]:
    """What a client receives after sending its request, and the events it must yield."""
    events: list[Any] = [
        HandshakeResponse(),
        Invocation("GatewayTrade", raw(["CON.F.US.MNQ.Z25", [{"price": 21000.25}]])),
        Completion("1", result=None),
        Ping(),
        Invocation("GatewayQuote", raw(["CON.F.US.ES.Z25", {"bestBid": 1.5}]), "9"),
        Close("bye"),
    ]
    server = SignalRConnection(Role.SERVER)
    server.receive_data(b'{"protocol":"json","version":1}\x1e')
    server.next_event()
    return b"".join(server.send(event) for event in events), events


def fresh_client() -> SignalRConnection:
    client = SignalRConnection(Role.CLIENT)
    client.send(HandshakeRequest())
    return client


def feed(conn: SignalRConnection, chunks: list[bytes]) -> list[Any]:
    events = []
    for chunk in chunks:
        conn.receive_data(chunk)
        events += [e for e in drain(conn) if e is not NEED_DATA and e is not CLOSED]
    return events


def test_handshake_response_and_first_invocation_in_one_chunk() -> None:
    stream, events = server_stream()
    client = fresh_client()
    assert feed(client, [stream]) == events


def test_split_at_every_byte() -> None:
    stream, events = server_stream()
    assert feed(fresh_client(), [stream[i : i + 1] for i in range(len(stream))]) == events


def test_split_into_two_at_every_position() -> None:
    stream, events = server_stream()
    for cut in range(1, len(stream)):
        assert feed(fresh_client(), [stream[:cut], stream[cut:]]) == events


def test_many_frames_per_chunk() -> None:
    client, server = handshake()
    chunk = b"".join(server.send(Invocation("GatewayTrade", [n])) for n in range(1000))
    client.receive_data(chunk)
    events = drain(client)
    assert [bytes(e.arguments) for e in events[:-1]] == [b"[%d]" % n for n in range(1000)]
    assert events[-1] is NEED_DATA


def test_eof_delivers_queued_messages_then_closes() -> None:
    client = opened(Role.CLIENT)
    client.receive_data(b'{"type":6}\x1e{"type":1,"target":"GatewayTr')
    client.receive_data(b"")
    assert drain(client) == [Ping(), CLOSED]
    assert client.state is State.CLOSED
    client.receive_data(b'{"type":6}\x1e')
    assert client.next_event() is CLOSED


def test_eof_during_handshake_closes() -> None:
    client = fresh_client()
    client.receive_data(b"")
    assert client.next_event() is CLOSED
    assert client.state is State.CLOSED


# --------------------------------------------------------------- bad messages


def test_oversize_message_is_skipped_and_the_next_one_decoded() -> None:
    client = opened(Role.CLIENT, max_message_size=100)
    big = b'{"type":1,"target":"GatewayDepth","arguments":["C",[' + b"1," * 100 + b"1]]}"
    at_cap = b'{"type":3,"invocationId":"' + b"x" * 72 + b'"}'
    assert len(at_cap) == 100
    client.receive_data(big + RS + at_cap + RS)
    assert drain(client) == [BadMessage("too_large", len(big)), Completion("x" * 72), NEED_DATA]
    assert client.state is State.OPEN


def test_oversize_message_in_pieces_is_reported_once() -> None:
    client = opened(Role.CLIENT, max_message_size=100)
    big = b'{"type":1,"target":"GatewayDepth","arguments":["C",[' + b"1," * 300 + b"1]]}"
    stream = big + RS + b'{"type":6}' + RS
    events = feed(client, [stream[i : i + 30] for i in range(0, len(stream), 30)])
    assert events == [BadMessage("too_large", 120), Ping()]


def test_unterminated_message_does_not_grow_the_buffer() -> None:
    client = opened(Role.CLIENT, max_message_size=1024)
    client.receive_data(b'{"type":1,"target":"GatewayTrade","arguments":["C",[')
    seen = []
    for _ in range(10_000):
        client.receive_data(b'{"price":1.0,"volume":1},' * 4)
        # white box: the unterminated tail is the only thing kept between calls
        assert len(client._partial) <= 1024
        seen += drain(client)[:-1]
    assert seen == [BadMessage("too_large", 1052)]
    client.receive_data(b'1]]}\x1e{"type":6}\x1e')
    assert drain(client) == [Ping(), NEED_DATA]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "bad_json"),
        (b"{", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b'{"type":1,"target":"x","arguments":[NaN]}', "bad_json"),
        (b'{"type":1,"target":"x","arguments":[1]} trailing', "bad_json"),
        (b'{"type":1,"target":"x","arguments":' + b"[" * 5000 + b"]" * 5000 + b"}", "bad_json"),
        (b"[1,2]", "bad_shape"),
        (b'"text"', "bad_shape"),
        (b"{}", "bad_shape"),
        (b'{"type":99}', "bad_shape"),
        (b'{"type":-1}', "bad_shape"),
        (b'{"type":"1"}', "bad_shape"),
        (b'{"type":1e400}', "bad_shape"),
        (b'{"type":1,"target":5,"arguments":[]}', "bad_shape"),
        (b'{"type":1,"target":"x"}', "bad_shape"),
        (b'{"type":1,"target":"x","arguments":{"a":1}}', "bad_shape"),
        (b'{"type":1,"target":"x","arguments":"[]"}', "bad_shape"),
        (b'{"type":1,"target":"x","arguments":[],"invocationId":7}', "bad_shape"),
        (b'{"type":3}', "bad_shape"),
        (b'{"type":3,"invocationId":"1","result":1e999}', "bad_shape"),
        (b'{"type":4,"invocationId":"1","target":"x","arguments":7}', "bad_shape"),
        (b'{"type":7,"allowReconnect":"yes"}', "bad_shape"),
        (b'{"type":7,"error":["x"]}', "bad_shape"),
    ],
)
@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_bad_message_is_skipped_and_the_connection_stays_open(
    role: Role, frame: bytes, reason: str
) -> None:
    conn = opened(role)
    conn.receive_data(frame + RS + b'{"type":6}' + RS)
    assert drain(conn) == [BadMessage(reason, len(frame)), Ping(), NEED_DATA]  # type: ignore[arg-type]
    assert conn.state is State.OPEN


# ---------------------------------------------------------------- send errors


class NotEncodable:
    pass


@pytest.mark.parametrize(
    "event",
    [
        BadMessage("bad_json", 1),
        HandshakeRequest(),
        HandshakeResponse(),
        Invocation("x", [NotEncodable()]),
        Invocation("x", msgspec.Raw(b'["\x1e"]')),
        {"type": 6},
    ],
)
def test_unsendable_event_is_fatal(event: Any) -> None:
    client, _ = handshake()
    with pytest.raises(ProtocolError):
        client.send(event)
    assert client.state is State.ERROR


def test_error_is_sticky() -> None:
    client = SignalRConnection(Role.CLIENT)
    client.receive_data(b"{}\x1e")
    with pytest.raises(ProtocolError):
        client.next_event()
    client.receive_data(b"more")
    assert len(client._partial) == 0
    with pytest.raises(ProtocolError):
        client.next_event()
    with pytest.raises(ProtocolError):
        client.send(HandshakeRequest())
    assert client.state is State.ERROR


# ----------------------------------------------------------------- properties

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=10,
)
ids = st.text(min_size=1, max_size=6)
optional_text = st.none() | st.text(max_size=8)
hub_messages = st.one_of(
    st.builds(Invocation, st.text(max_size=12), st.lists(json_values, max_size=3), st.none() | ids),
    st.builds(StreamItem, ids, json_values),
    st.builds(Completion, ids, json_values, optional_text),
    st.builds(StreamInvocation, ids, st.text(max_size=8), st.lists(json_values, max_size=3)),
    st.builds(CancelInvocation, ids),
    st.just(Ping()),
)


def as_received(event: Any) -> Any:
    """What the peer decodes: arguments stay JSON bytes."""
    if isinstance(event, Invocation):
        return Invocation(event.target, raw(event.arguments), event.invocation_id)
    if isinstance(event, StreamInvocation):
        return StreamInvocation(event.invocation_id, event.target, raw(event.arguments))
    return event


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in pairwise(points)]


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(hub_messages, max_size=8),
    close=st.none() | st.builds(Close, optional_text, st.booleans()),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    sender=st.sampled_from(Role),
)
def test_valid_messages_decode_the_same_however_split(
    messages: list[Any], close: Close | None, cuts: list[int], sender: Role
) -> None:
    client = SignalRConnection(Role.CLIENT)
    server = SignalRConnection(Role.SERVER)
    server.receive_data(client.send(HandshakeRequest()))
    server.next_event()
    stream = server.send(HandshakeResponse())
    sent = [*messages, close] if close is not None else messages
    if sender is Role.SERVER:
        payload = b"".join(server.send(m) for m in sent)
        received = feed(client, chunked(stream + payload, cuts))[1:]
    else:
        client.receive_data(stream)
        drain(client)
        payload = b"".join(client.send(m) for m in sent)
        received = feed(server, chunked(payload, cuts))
    assert received == [as_received(m) for m in sent]


garbage = st.lists(
    st.binary(max_size=24)
    | st.just(RS)
    | st.sampled_from(
        [
            b'{"type":1,"target":"T","arguments":[',
            b'{"type":6}',
            b'{"protocol":"json","version":1}',
            b"{}",
        ]
    ),
    max_size=30,
).map(b"".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=garbage,
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    start=st.sampled_from(["server", "client", "open_client", "open_server"]),
)
def test_garbage_only_raises_protocol_error_and_stays_bounded(
    data: bytes, cuts: list[int], start: str
) -> None:
    cap = 32
    if start == "server":
        conn = SignalRConnection(Role.SERVER, max_message_size=cap)
    elif start == "client":
        conn = SignalRConnection(Role.CLIENT, max_message_size=cap)
        conn.send(HandshakeRequest())
    else:
        conn = opened(Role.CLIENT if start == "open_client" else Role.SERVER, cap)
    for chunk in chunked(data, cuts):
        conn.receive_data(chunk)
        assert len(conn._partial) <= cap  # white box: the only buffer kept between calls
        try:
            events = drain(conn)
        except ProtocolError:
            assert conn.state is State.ERROR
            return
        assert not conn._frames
        for event in events[:-1]:
            if isinstance(event, BadMessage):
                assert event.reason in ("too_large", "bad_json", "bad_shape")
    conn.receive_data(b"")
    if conn.state is not State.ERROR:
        assert conn.next_event() is CLOSED
