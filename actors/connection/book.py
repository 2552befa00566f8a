"""The subscription book: what one hub must be subscribed to, across reconnects.

The book outlives the actor. The node creates one per hub and hands the same
object to every incarnation of that hub's connection actor, so a restart after
a failure resubscribes everything the previous incarnation had, without the
application asking again.

Invariant (why this needs no lock): only the *running* incarnation touches the
book, and a supervisor starts the next incarnation only after the previous one
has exited, so there is one mutator at a time. Nothing else may mutate it (the
node may seed it before the node starts).

Theory of operation: a subscription is a (kind, key) pair, the key being a
contract id or an account id. Each maps to one hub call; several pairs can map
to the same call (``SubscribeAccounts`` takes no account id, so every account
asking for ``accounts`` shares it), hence a reference count per call. A call is
sent when its count goes 0 -> 1 and withdrawn when it goes 1 -> 0, so commands
repeated by an application never send a duplicate subscription.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, TypeAlias

from protocols.hubs import (
    ACCOUNT_KINDS,
    ACCOUNT_METHODS,
    ACCOUNT_WIDE,
    MARKET_KINDS,
    MARKET_METHODS,
    HubCommand,
    HubName,
    SubscribeAccount,
    SubscribeContract,
    UnsubscribeAccount,
    UnsubscribeContract,
)

Call: TypeAlias = tuple[str, tuple[str | int, ...]]
"""A hub invocation: (target, arguments)."""

_Key: TypeAlias = tuple[str, str | int]  # (kind, contract id or account id)

MAX_CONTRACT_LEN: Final = 128
_METHODS: Final[dict[str, dict[str, tuple[str, str]]]] = {
    "market": MARKET_METHODS,
    "user": ACCOUNT_METHODS,
}
_MAX_ACCOUNT_ID: Final = 2**63 - 1


class BadCommand(ValueError):
    """A subscription command that cannot be applied; ``reason`` is a short counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class SubscriptionBook:
    """Subscriptions of one hub, in the order they were first made."""

    def __init__(self, hub: HubName, *, max_subscriptions: int = 4096) -> None:
        if hub not in ("market", "user"):
            raise ValueError(f"hub must be 'market' or 'user', not {hub!r}")
        if max_subscriptions < 1:
            raise ValueError("max_subscriptions must be positive")
        self.hub: Final = hub
        self._max = max_subscriptions
        self._keys: dict[_Key, None] = {}  # an ordered set
        self._calls: dict[Call, int] = {}  # subscribe call -> number of keys needing it

    def __repr__(self) -> str:
        return f"<SubscriptionBook {self.hub} subscriptions={len(self._keys)}>"

    def __len__(self) -> int:
        return len(self._keys)

    def calls(self) -> list[Call]:
        """Every subscribe call the hub needs, to send again after a (re)connect."""
        return list(self._calls)

    def apply(self, command: HubCommand) -> list[Call]:
        """Record ``command``; the calls to send now (empty if nothing changed).

        Raises ``BadCommand`` (and changes nothing) for a command of the other
        hub, an invalid id or kind, or a subscription beyond the book's bound.
        """
        match command:
            case SubscribeContract(contract=contract, kinds=kinds):
                return self._subscribe(self._market_keys(contract, kinds))
            case UnsubscribeContract(contract=contract, kinds=kinds):
                return self._unsubscribe(self._market_keys(contract, kinds))
            case SubscribeAccount(account_id=account, kinds=kinds):
                return self._subscribe(self._account_keys(account, kinds))
            case UnsubscribeAccount(account_id=account, kinds=kinds):
                return self._unsubscribe(self._account_keys(account, kinds))
        raise BadCommand("unknown", f"not a subscription command: {type(command).__name__}")

    # -------------------------------------------------------------- internals

    def _subscribe(self, keys: list[_Key]) -> list[Call]:
        new = [key for key in keys if key not in self._keys]
        if len(self._keys) + len(new) > self._max:
            raise BadCommand("full", f"the {self.hub} book holds at most {self._max} subscriptions")
        out = []
        for key in new:
            self._keys[key] = None
            call = self._call(key, subscribe=True)
            count = self._calls.get(call, 0)
            self._calls[call] = count + 1
            if count == 0:
                out.append(call)
        return out

    def _unsubscribe(self, keys: list[_Key]) -> list[Call]:
        out = []
        for key in keys:
            if key not in self._keys:
                continue
            del self._keys[key]
            call = self._call(key, subscribe=True)
            count = self._calls.pop(call) - 1
            if count:
                self._calls[call] = count
            else:
                out.append(self._call(key, subscribe=False))
        return out

    def _call(self, key: _Key, *, subscribe: bool) -> Call:
        kind, ident = key
        subscribe_target, unsubscribe_target = _METHODS[self.hub][kind]
        target = subscribe_target if subscribe else unsubscribe_target
        if self.hub == "user" and kind in ACCOUNT_WIDE:
            return target, ()
        return target, (ident,)

    def _market_keys(self, contract: object, kinds: object) -> list[_Key]:
        if self.hub != "market":
            raise BadCommand("wrong_hub", "contract subscriptions belong to the market hub")
        if not (
            isinstance(contract, str)
            and 0 < len(contract) <= MAX_CONTRACT_LEN
            and contract.isprintable()
            and not any(c.isspace() for c in contract)
        ):
            raise BadCommand("contract", f"invalid contract id {_short(contract)}")
        return [(kind, contract) for kind in _kinds(kinds, MARKET_KINDS)]

    def _account_keys(self, account: object, kinds: object) -> list[_Key]:
        if self.hub != "user":
            raise BadCommand("wrong_hub", "account subscriptions belong to the user hub")
        if type(account) is not int or not 0 < account <= _MAX_ACCOUNT_ID:
            raise BadCommand("account", f"invalid account id {_short(account)}")
        return [(kind, account) for kind in _kinds(kinds, ACCOUNT_KINDS)]


def _kinds(kinds: object, allowed: Iterable[str]) -> list[str]:
    """The distinct kinds asked for, in order; all must be known and there must be one."""
    if not isinstance(kinds, tuple | list) or not kinds:
        raise BadCommand("kinds", f"kinds must be a non-empty tuple, got {_short(kinds)}")
    known = set(allowed)
    bad = [k for k in kinds if not isinstance(k, str) or k not in known]
    if bad:
        raise BadCommand("kinds", f"unknown kinds {_short(bad)}; known: {', '.join(allowed)}")
    return list(dict.fromkeys(kinds))


def _short(value: object) -> str:
    """A bounded repr for messages: a bad command may carry anything, of any size."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
