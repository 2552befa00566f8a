"""A sans-IO codec for the SignalR JSON hub protocol, for either end of the socket.

Bytes go in with ``receive_data``, events come out of ``next_event``, events go
out as bytes from ``send``. No sockets, no tasks, no clocks: the connection actor
owns the websocket, the simulated gateway owns its server socket, and both share
this one codec, so they cannot disagree about the protocol.

Theory of operation
===================

Framing. Every message, the handshake included, is JSON text ended by 0x1E.
JSON escapes control characters, so 0x1E never occurs inside a message and a
plain split is exact. ``receive_data`` splits what arrived and queues the
complete frames; ``next_event`` decodes one queued frame at a time. Decoding is
lazy on purpose: which decoder applies depends on the state *when the frame is
read*, and the state also moves with what we ``send`` in between (a server reads
the HandshakeRequest, sends its response, and only then reads hub messages that
arrived in the same chunk).

State. One machine for the whole connection, shared by both roles; each
transition is keyed by (state, who spoke, what kind of event). ``send`` feeds it
our role, ``next_event`` the peer's. A key that is not in ``_TRANSITIONS`` is a
protocol violation: ``ProtocolError``, and the state becomes ERROR for good. So
the table is the whole list of what may happen; read it first.

    AWAIT_REQUEST   --client HandshakeRequest(json, 0|1)-->  AWAIT_RESPONSE
    AWAIT_REQUEST   --client HandshakeRequest(other)------>  AWAIT_REJECTION
    AWAIT_RESPONSE  --server HandshakeResponse()---------->  OPEN
    AWAIT_RESPONSE  --server HandshakeResponse(error)----->  CLOSED
    AWAIT_REJECTION --server HandshakeResponse(error)----->  CLOSED
    OPEN            --either hub message / Ping----------->  OPEN
    OPEN            --either Close------------------------>  CLOSED
    any but ERROR   --EOF--------------------------------->  CLOSED

The server decides the handshake this way: ``next_event`` hands it every
well-formed HandshakeRequest, and the state says what it owes the client. In
AWAIT_RESPONSE it sends ``HandshakeResponse()``; in AWAIT_REJECTION only
``HandshakeResponse(error=...)`` is allowed, so an unsupported protocol can never
be accepted by accident. A server must answer before it asks for the next event.
Once CLOSED (a Close either way, a refusal, EOF) ``next_event`` only says CLOSED:
frames still queued are dropped, since nothing after a Close means anything.

Bad input. A fault in one hub message is the peer's problem, not the
connection's: the frame is skipped and reported as ``BadMessage`` (bad_json,
bad_shape, too_large) while the state stays OPEN. A message that outgrows
``max_message_size`` is reported as soon as it does, with the size seen so far,
and then dropped up to its terminator without being buffered; that is what keeps
memory bounded and turns the peer SDK's "frame cap causes reconnect loop" into one
counted skip. Anything wrong before the handshake completed is fatal, because no
later byte can be trusted to be framed the way we think.

Invariants: ``len(self._partial) <= max_message_size`` after every call; only
``ProtocolError`` ever leaves ``send``, ``receive_data`` and ``next_event``, and
every ``ProtocolError`` leaves the state ERROR.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import msgspec

from protocols.errors import MessageTooLarge, ProtocolError

RECORD_SEPARATOR: Final = b"\x1e"
SUPPORTED_VERSIONS: Final = frozenset({0, 1})
"""JSON hub protocol versions a server accepts."""


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    AWAIT_REQUEST = "await_request"
    AWAIT_RESPONSE = "await_response"
    AWAIT_REJECTION = "await_rejection"
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


class Sentinel(enum.Enum):
    """What ``next_event`` returns when it has no event to give."""

    NEED_DATA = "NEED_DATA"
    CLOSED = "CLOSED"


NEED_DATA: Final = Sentinel.NEED_DATA
CLOSED: Final = Sentinel.CLOSED


# ---------------------------------------------------------------------- events


class HandshakeRequest(msgspec.Struct, frozen=True):
    protocol: str = "json"
    version: int = 1


class HandshakeResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """``{}`` accepts the handshake; ``{"error": ...}`` refuses it and ends the connection."""

    error: str | None = None


class _HubMessage(
    msgspec.Struct, frozen=True, rename="camel", omit_defaults=True, tag_field="type"
):
    """Base of the messages after the handshake; ``type`` is the wire tag."""


class Invocation(_HubMessage, frozen=True, tag=1):
    """Call ``target`` on the peer; without ``invocation_id`` no Completion is expected.

    Received ``arguments`` are a ``msgspec.Raw`` of the JSON array exactly as sent,
    so the caller decodes them once, straight into its own typed Structs. The codec
    checked only the JSON syntax (not the UTF-8 of its strings); the caller's typed
    decode judges the rest. Sent ``arguments`` may be a ``Raw`` or anything msgspec
    can encode.
    """

    target: str
    # The decoder reads this annotation (Raw: keep the bytes); type checkers read
    # the other one, since a sender may pass any encodable sequence.
    if TYPE_CHECKING:
        arguments: Any
    else:
        arguments: msgspec.Raw
    invocation_id: str | None = None


class StreamItem(_HubMessage, frozen=True, tag=2):
    invocation_id: str
    item: Any


class Completion(_HubMessage, frozen=True, tag=3):
    invocation_id: str
    result: Any = None
    error: str | None = None


class StreamInvocation(_HubMessage, frozen=True, tag=4):
    invocation_id: str
    target: str
    if TYPE_CHECKING:
        arguments: Any
    else:
        arguments: msgspec.Raw


class CancelInvocation(_HubMessage, frozen=True, tag=5):
    invocation_id: str


class Ping(_HubMessage, frozen=True, tag=6):
    pass


class Close(_HubMessage, frozen=True, tag=7):
    error: str | None = None
    allow_reconnect: bool = False


BadReason: TypeAlias = Literal["too_large", "bad_json", "bad_shape"]


class BadMessage(msgspec.Struct, frozen=True, gc=False):
    """One received message was skipped; the connection is still usable.

    ``size`` is the message length in bytes without its terminator; for
    ``too_large`` it is what had arrived when the cap was crossed (the rest is
    dropped unseen).
    """

    reason: BadReason
    size: int


HubMessage: TypeAlias = (
    Invocation | StreamItem | Completion | StreamInvocation | CancelInvocation | Ping | Close
)
Event: TypeAlias = HandshakeRequest | HandshakeResponse | HubMessage | BadMessage


# ------------------------------------------------------------- wire decoding


class _HandshakeRequestWire(msgspec.Struct, frozen=True):
    # Both required on the wire: a default must not turn ``{}`` into json/1.
    protocol: str
    version: int


class _HandshakeResponseWire(msgspec.Struct, frozen=True):
    error: str | None = None
    # Only hub messages carry ``type``: a server that sends one first skipped the handshake.
    type: Any = None


_ENCODER: Final = msgspec.json.Encoder()
_HUB_DECODER: Final = msgspec.json.Decoder(HubMessage)
_REQUEST_DECODER: Final = msgspec.json.Decoder(_HandshakeRequestWire)
_RESPONSE_DECODER: Final = msgspec.json.Decoder(_HandshakeResponseWire)


# --------------------------------------------------------------- state table


class _Kind(enum.Enum):
    """Kinds the table needs beyond event classes: a handshake's content decides its edge."""

    UNSUPPORTED_REQUEST = "unsupported_request"
    REJECTION = "rejection"


_Edges: TypeAlias = dict[type[Event] | _Kind, State]
_CLIENT, _SERVER = Role.CLIENT, Role.SERVER
_KEEP_OPEN = (Invocation, StreamItem, Completion, StreamInvocation, CancelInvocation, Ping)

# state -> who speaks -> what they send -> next state. EOF is the one rule outside
# the table: it closes from every state but ERROR.
_TRANSITIONS: Final[dict[State, dict[Role, _Edges]]] = {
    State.AWAIT_REQUEST: {
        _CLIENT: {
            HandshakeRequest: State.AWAIT_RESPONSE,
            _Kind.UNSUPPORTED_REQUEST: State.AWAIT_REJECTION,
        },
        _SERVER: {},
    },
    State.AWAIT_RESPONSE: {
        _CLIENT: {},
        _SERVER: {HandshakeResponse: State.OPEN, _Kind.REJECTION: State.CLOSED},
    },
    State.AWAIT_REJECTION: {
        _CLIENT: {},
        _SERVER: {_Kind.REJECTION: State.CLOSED},
    },
    State.OPEN: {
        role: {**dict.fromkeys(_KEEP_OPEN, State.OPEN), Close: State.CLOSED} for role in Role
    },
    State.CLOSED: {_CLIENT: {}, _SERVER: {}},
    State.ERROR: {_CLIENT: {}, _SERVER: {}},
}

# Who sends the next frame while the handshake runs; derived, so it cannot drift.
_SPEAKER: Final[dict[State, Role]] = {
    state: role
    for state in (State.AWAIT_REQUEST, State.AWAIT_RESPONSE, State.AWAIT_REJECTION)
    for role, edges in _TRANSITIONS[state].items()
    if edges
}


def _kind(event: object) -> type[Event] | _Kind:
    if type(event) is HandshakeRequest and (
        event.protocol != "json" or event.version not in SUPPORTED_VERSIONS
    ):
        return _Kind.UNSUPPORTED_REQUEST
    if type(event) is HandshakeResponse and event.error is not None:
        return _Kind.REJECTION
    return type(event)  # type: ignore[return-value]  # unknown classes miss the table


# ---------------------------------------------------------------- connection


class SignalRConnection:
    """One end of one SignalR JSON hub connection."""

    def __init__(self, role: Role, *, max_message_size: int = 1 << 20) -> None:
        if max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        self.role: Final = role
        self._peer: Final = _SERVER if role is _CLIENT else _CLIENT
        self._max: Final = max_message_size
        # Complete frames not yet decoded, or a BadMessage found while splitting.
        self._frames: deque[bytes | BadMessage] = deque()
        self._partial = bytearray()  # the unterminated tail, never over self._max
        self._discarding = False  # inside an oversize message, dropping to its 0x1E
        self._eof = False
        self._enter(State.AWAIT_REQUEST)

    @property
    def state(self) -> State:
        return self._state

    # ------------------------------------------------------------------ send

    def send(self, event: Event) -> bytes:
        """The bytes of ``event`` with its terminator, if the protocol allows it now."""
        self._step(self._ours, self.role, _kind(event))
        try:
            data = _ENCODER.encode(event)
        except (TypeError, ValueError, RecursionError) as exc:
            raise self._fail(f"cannot encode {type(event).__name__}: {exc}") from None
        if RECORD_SEPARATOR in data:
            # Only a Raw payload can smuggle one in; it would forge a frame boundary.
            raise self._fail(f"{type(event).__name__} contains a raw 0x1E byte")
        return data + RECORD_SEPARATOR

    # --------------------------------------------------------------- receive

    def receive_data(self, data: bytes) -> None:
        """Queue bytes from the peer; ``b""`` means the peer closed the stream.

        Bytes after EOF, after Close or in ERROR are ignored: nobody will read them.
        """
        if self._eof or self._state is State.CLOSED or self._state is State.ERROR:
            return
        if not data:
            self._eof = True
            self._partial.clear()
            return
        if self._discarding:
            end = data.find(RECORD_SEPARATOR)
            if end < 0:
                return
            self._discarding = False
            data = data[end + 1 :]
        *complete, tail = data.split(RECORD_SEPARATOR)
        if complete:
            if self._partial:
                self._partial += complete[0]
                complete[0] = bytes(self._partial)
                self._partial.clear()
            self._frames.extend(complete)
        self._partial += tail
        if len(self._partial) > self._max:
            self._frames.append(BadMessage("too_large", len(self._partial)))
            self._partial.clear()
            self._discarding = True

    def next_event(self) -> Event | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        """The next event, ``NEED_DATA`` until more bytes arrive, or ``CLOSED`` for good."""
        if not self._frames:  # always the case in CLOSED and ERROR
            if self._state is State.ERROR:
                raise ProtocolError("the connection already failed")
            if self._eof and self._state is not State.CLOSED:
                self._enter(State.CLOSED)
            return CLOSED if self._state is State.CLOSED else NEED_DATA
        frame = self._frames.popleft()
        event: Event
        if self._state is State.OPEN:
            event = self._decode_hub(frame)
        else:
            event = self._decode_handshake(frame)
        if type(event) is not BadMessage:
            self._step(self._theirs, self._peer, _kind(event))
        return event

    # -------------------------------------------------------------- internals

    def _enter(self, state: State) -> None:
        self._state = state
        # The two rows of the table that apply now, cached: hashing an Enum key
        # runs Python code, and this lookup is on the path of every message.
        self._ours = _TRANSITIONS[state][self.role]
        self._theirs = _TRANSITIONS[state][self._peer]
        if state is State.CLOSED or state is State.ERROR:
            self._frames.clear()  # nothing after a Close, a refusal or a failure counts
            self._partial.clear()

    def _step(self, edges: _Edges, role: Role, kind: type[Event] | _Kind) -> None:
        new = edges.get(kind)
        if new is None:
            name = kind.value if isinstance(kind, _Kind) else getattr(kind, "__name__", kind)
            raise self._fail(f"{role.value} cannot send {name} in state {self._state.name}")
        if new is not self._state:
            self._enter(new)

    def _fail(self, reason: str, error: type[ProtocolError] = ProtocolError) -> ProtocolError:
        self._enter(State.ERROR)
        return error(reason)

    def _decode_hub(self, frame: bytes | BadMessage) -> HubMessage | BadMessage:
        if isinstance(frame, BadMessage):
            return frame
        if len(frame) > self._max:
            return BadMessage("too_large", len(frame))
        try:
            message: HubMessage = _HUB_DECODER.decode(frame)
        except msgspec.ValidationError:
            return BadMessage("bad_shape", len(frame))
        except (msgspec.DecodeError, RecursionError):
            return BadMessage("bad_json", len(frame))
        # Raw takes any JSON value; callers are promised an array (0x5B is "[").
        if isinstance(message, Invocation | StreamInvocation) and (
            memoryview(message.arguments)[0] != 0x5B
        ):
            return BadMessage("bad_shape", len(frame))
        return message

    def _decode_handshake(self, frame: bytes | BadMessage) -> HandshakeRequest | HandshakeResponse:
        peer = self._peer
        if peer is not _SPEAKER[self._state]:
            raise self._fail(f"{peer.value} spoke out of turn in state {self._state.name}")
        if isinstance(frame, BadMessage) or len(frame) > self._max:
            raise self._fail("handshake message exceeds max_message_size", MessageTooLarge)
        try:
            if peer is _CLIENT:
                request = _REQUEST_DECODER.decode(frame)
                return HandshakeRequest(request.protocol, request.version)
            response = _RESPONSE_DECODER.decode(frame)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise self._fail(f"malformed handshake from {peer.value}: {exc}") from None
        if response.type is not None:
            raise self._fail("expected a handshake response, got a hub message")
        return HandshakeResponse(response.error)
