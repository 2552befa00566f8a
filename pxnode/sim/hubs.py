"""Hub sessions, sans-IO: SignalR bytes in, SignalR bytes out, one per websocket.

A ``HubSession`` owns the codec and the subscriptions of one connection. The
server feeds it what the websocket received and writes back what ``receive``
returns; market data reaches it through ``route``, which encodes each event
once for all sessions that want it (encode once, send to many).

Theory of operation
-------------------
The codec decides what is legal (handshake first, then hub messages); this
module decides what an invocation means. A method is a row of ``_METHODS``:
(hub, target) → (topic, subscribe?, argument decoder). Every invocation with an
``invocationId`` gets a Completion (with ``error`` for an unknown method, wrong
arguments or an unknown contract), so a client awaiting it never hangs. After
a subscription the current quote, depth or account state follows at once, like
the real gateway; trades are never replayed (that is History/retrieveBars' job).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final, TypeAlias

import msgspec

from protocols import gateway as gw
from protocols.errors import ProtocolError
from protocols.hubs import (
    ACCOUNT_METHODS,
    ACCOUNT_WIDE,
    MARKET_METHODS,
    USER_EVENTS,
    HubName,
)
from protocols.signalr import (
    CLOSED,
    NEED_DATA,
    RECORD_SEPARATOR,
    BadMessage,
    Close,
    Completion,
    HandshakeRequest,
    HandshakeResponse,
    Invocation,
    Role,
    SignalRConnection,
    State,
    StreamInvocation,
)
from pxnode.sim.account import DemoAccounts, mark
from pxnode.sim.book import DOM_BEST_BID
from pxnode.sim.market import (
    DepthEmitted,
    MarketEvent,
    MarketSim,
    QuoteEmitted,
    TradesEmitted,
)

Topic: TypeAlias = str  # a key of MARKET_METHODS or ACCOUNT_METHODS

_ONE_CONTRACT: Final = msgspec.json.Decoder(tuple[str])
_ONE_ACCOUNT: Final = msgspec.json.Decoder(tuple[int])
_NOTHING: Final = msgspec.json.Decoder(tuple[()])

Method: TypeAlias = tuple[Topic, bool, msgspec.json.Decoder[Any]]


def _method_table() -> dict[tuple[HubName, str], Method]:
    """(hub, method) -> (topic, subscribe?, arguments decoder), from the client's own tables."""
    table: dict[tuple[HubName, str], Method] = {}
    for kind, (on, off) in MARKET_METHODS.items():
        table["market", on] = (kind, True, _ONE_CONTRACT)
        table["market", off] = (kind, False, _ONE_CONTRACT)
    for user_kind, (on, off) in ACCOUNT_METHODS.items():
        args: msgspec.json.Decoder[Any] = _NOTHING if user_kind in ACCOUNT_WIDE else _ONE_ACCOUNT
        table["user", on] = (user_kind, True, args)
        table["user", off] = (user_kind, False, args)
    return table


_METHODS: Final = _method_table()

USER_TARGETS: Final[dict[str, str]] = {
    "accounts": "GatewayUserAccount",
    "orders": "GatewayUserOrder",
    "positions": "GatewayUserPosition",
    "trades": "GatewayUserTrade",
}
assert set(USER_TARGETS.values()) == set(USER_EVENTS)
ACCOUNTS_KEY: Final = 0  # SubscribeAccounts takes no argument; its one "key"
WRAP_ACTION: Final = 1  # the ``action`` of payloads sent as {action, data}


def invocation(target: str, *arguments: Any) -> bytes:
    """One server-to-client invocation frame (with its terminator)."""
    return gw.ENCODER.encode(Invocation(target, arguments)) + RECORD_SEPARATOR


def topic_of(event: MarketEvent) -> Topic:
    if type(event) is QuoteEmitted:
        return "quotes"
    return "depth" if type(event) is DepthEmitted else "trades"


def market_frame(event: MarketEvent) -> bytes:
    if type(event) is TradesEmitted:
        return invocation("GatewayTrade", event.contract, event.trades)
    if type(event) is QuoteEmitted:
        return invocation("GatewayQuote", event.contract, event.quote)
    assert type(event) is DepthEmitted
    return invocation("GatewayDepth", event.contract, event.levels)


class HubSession:
    """The SignalR side of one hub connection.

    ``receive`` returns the bytes to send back; ``done`` turns true once the
    connection is over at the SignalR level (Close either way, refused handshake
    or a protocol violation) and the websocket should be closed.
    """

    def __init__(
        self,
        hub: HubName,
        sim: MarketSim,
        accounts: DemoAccounts,
        *,
        max_message_size: int,
        user_snapshot: bool = True,
    ) -> None:
        self.hub: Final = hub
        self._user_snapshot = user_snapshot
        self._sim, self._accounts = sim, accounts
        self.codec = SignalRConnection(Role.SERVER, max_message_size=max_message_size)
        self.subscriptions: dict[Topic, set[str | int]] = {}
        self.bad_messages = 0
        self.failed = False

    @property
    def open(self) -> bool:
        return self.codec.state is State.OPEN

    @property
    def done(self) -> bool:
        return self.failed or self.codec.state is State.CLOSED

    def wants(self, topic: Topic, key: str | int) -> bool:
        keys = self.subscriptions.get(topic)
        return keys is not None and key in keys

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the client (``b""`` = it closed); returns the bytes to answer."""
        out = bytearray()
        self.codec.receive_data(data)
        while not self.failed:
            try:
                event = self.codec.next_event()
            except ProtocolError:
                self.failed = True
                break
            if event is NEED_DATA or event is CLOSED:
                break
            if type(event) is HandshakeRequest:
                out += self._handshake(event)
            elif type(event) is Invocation:
                out += self._invoke(event)
            elif type(event) is StreamInvocation:
                error = f"Streaming method '{event.target}' is not supported"
                out += self.codec.send(Completion(event.invocation_id, error=error))
            elif type(event) is BadMessage:
                self.bad_messages += 1
        return bytes(out)

    def close(self, error: str | None = None, *, allow_reconnect: bool = False) -> bytes:
        """A SignalR Close to send before closing the websocket (nothing if not open)."""
        if not self.open:
            return b""
        return self.codec.send(Close(error, allow_reconnect))

    # --------------------------------------------------------------- internals

    def _handshake(self, request: HandshakeRequest) -> bytes:
        if self.codec.state is State.AWAIT_RESPONSE:
            return self.codec.send(HandshakeResponse())
        refusal = f"The protocol '{request.protocol}' version {request.version} is not supported."
        return self.codec.send(HandshakeResponse(error=refusal))

    def _invoke(self, call: Invocation) -> bytes:
        method = _METHODS.get((self.hub, call.target))
        frames: list[bytes] = []
        error = None
        if method is None:
            error = f"Unknown hub method '{call.target}'"
        else:
            topic, subscribe, decoder = method
            try:
                args = decoder.decode(call.arguments)
            except msgspec.DecodeError:
                error = f"Invalid arguments for '{call.target}'"
            else:
                key: str | int = args[0] if args else ACCOUNTS_KEY
                if self.hub == "market" and key not in self._sim:
                    error = f"Unknown contract '{key}'"
                elif subscribe:
                    self.subscriptions.setdefault(topic, set()).add(key)
                    frames = list(self._snapshot(topic, key))
                else:
                    self.subscriptions.get(topic, set()).discard(key)
        completion = b""
        if call.invocation_id is not None:
            completion = self.codec.send(Completion(call.invocation_id, error=error))
        return completion + b"".join(frames)

    def _snapshot(self, topic: Topic, key: str | int) -> Iterator[bytes]:
        if self.hub == "market":
            assert isinstance(key, str)
            if topic == "quotes":
                yield invocation("GatewayQuote", key, self._sim.quote(key))
            elif topic == "depth" and self._sim.depth(key):
                yield invocation("GatewayDepth", key, self._sim.depth(key))
            return
        if self._user_snapshot:
            yield from user_frames(self._accounts, self._sim, topic, key)


def user_frames(
    accounts: DemoAccounts, sim: MarketSim, topic: Topic, key: str | int
) -> Iterator[bytes]:
    """The state of one user topic as hub events (orders and positions wrapped)."""
    target = USER_TARGETS[topic]
    if topic == "accounts":
        for account in accounts.accounts(mark(sim)):
            yield invocation(target, account)
    elif topic == "orders" and isinstance(key, int):
        for order in accounts.open_orders(key):
            yield invocation(target, gw.Wrapped(order, WRAP_ACTION))
    elif topic == "positions" and isinstance(key, int):
        for position in accounts.open_positions(key):
            yield invocation(target, gw.Wrapped(position, WRAP_ACTION))
    elif topic == "trades" and isinstance(key, int):
        for trade in accounts.trades_between(key, 0, 1 << 62):
            yield invocation(target, trade)


def user_route(
    changes: list[tuple[str, Any]], sessions: Iterable[HubSession]
) -> Iterator[tuple[HubSession, list[bytes]]]:
    """Each open user session with the frames of the demo trader's ``changes`` it
    subscribed to (orders and positions wrapped, as the gateway sends them)."""
    frames: list[tuple[Topic, str | int, bytes]] = []
    for topic, payload in changes:
        key = ACCOUNTS_KEY if topic in ACCOUNT_WIDE else payload.account_id
        body = payload if topic in ("accounts", "trades") else gw.Wrapped(payload, WRAP_ACTION)
        frames.append((topic, key, invocation(USER_TARGETS[topic], body)))
    for session in sessions:
        if session.hub == "user" and session.open:
            mine = [frame for topic, key, frame in frames if session.wants(topic, key)]
            if mine:
                yield session, mine


def route(
    events: list[MarketEvent], sessions: Iterable[HubSession]
) -> Iterator[tuple[HubSession, list[bytes]]]:
    """Each open market session with the frames of ``events`` it subscribed to, in order."""
    frames: dict[int, bytes] = {}  # event index -> frame, encoded once on first demand
    for session in sessions:
        if session.hub != "market" or not session.open or not session.subscriptions:
            continue
        mine = []
        for i, event in enumerate(events):
            if session.wants(topic_of(event), event.contract):
                frame = frames.get(i)
                if frame is None:
                    frame = frames[i] = market_frame(event)
                mine.append(frame)
        if mine:
            yield session, mine


# ------------------------------------------------------------------- faults
# Every way a frame can be wrong that a client must survive; ``malformed`` cycles them.
_MALFORMED: Final = (
    b'{"type":1,"target":"GatewayTrade","arguments":["%s",[{"symbolId":',  # cut short
    b'{"type":1,"target":"GatewayTrade","arguments":["%s"]}',  # wrong arity
    b'{"type":1,"target":"GatewayTrade","arguments":["%s",[{"symbolId":7,"price":"high",'
    b'"timestamp":12,"type":"buy","volume":-1}]]}',  # wrong types
    b'{"type":1,"target":"GatewayTrade","arguments":["%s",[{"symbolId":"F.US.X","price":1e999,'
    b'"timestamp":"2025-11-24T16:00:00+00:00","type":0,"volume":0}]]}',  # infinite price, 0 lots
    b'{"type":1,"target":"GatewayQuote","arguments":["%s",{"lastPrice":"NaN","bestBid":-1,'
    b'"timestamp":"not a time"}]}',  # NaN-ish quote
    b'{"type":1,"target":"GatewayMystery","arguments":["%s",{}]}',  # unknown target
    b'{"type":1,"target":"GatewayTrade","arguments":{"contract":"%s"}}',  # arguments not an array
    b'{"type":99,"arguments":["%s"]}',  # unknown message type
)


def malformed_frames(count: int, contract: str) -> list[bytes]:
    """``count`` bad frames for ``contract``, cycling through every kind of damage."""
    name = contract.encode()
    return [(_MALFORMED[i % len(_MALFORMED)] % name) + RECORD_SEPARATOR for i in range(count)]


def oversize_frame(size: int, contract: str, sim: MarketSim) -> bytes:
    """A well-formed GatewayDepth frame of at least ``size`` bytes (the book repeated).

    Depth is the payload a client can lose harmlessly: a later update replaces it.
    """
    quote = sim.quote(contract)
    level = gw.DepthItem(quote.timestamp or "", DOM_BEST_BID, quote.best_bid or 0.0, 1, 1)
    item = gw.ENCODER.encode(level)
    copies = size // (len(item) + 1) + 1
    payload = b"[" + b",".join([item] * copies) + b"]"
    head = b'{"type":1,"target":"GatewayDepth","arguments":["%s",' % contract.encode()
    return head + payload + b"]}" + RECORD_SEPARATOR
