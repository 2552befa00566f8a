"""Fault SPECs: parse the mini-language, then say which faults are due when.

The grammar is documented in the package docstring (``pxnode.sim``).
Parsing is strict: every mistake is a ``ConfigError`` naming the item, because
a typo that silently disables a fault makes a chaos test pass for the wrong reason.

``FaultSchedule`` is pure: ``due(elapsed)`` returns the faults whose time has
come, in time order, and ``next_at`` says when to ask again. Random faults
(``p=``) draw from one seeded RNG per rule, so a (seed, SPEC) pair replays the
same faults at the same offsets on every run.
"""

from __future__ import annotations

import math
import random
from typing import Final, Literal, TypeAlias, get_args

import msgspec

from protocols.checks import non_negative
from protocols.errors import ConfigError

FaultKind: TypeAlias = Literal[
    "drop", "stall", "malformed", "oversize", "expire", "revoke", "logout",
    "rest429", "rest500", "slow", "burst",
]  # fmt: skip

# kind -> (default argument, is a count, upper bound); None: the kind takes no argument
_ARGS: Final[dict[str, tuple[float, bool, float] | None]] = {
    "drop": None,
    "stall": (5.0, False, 86_400.0),
    "malformed": (1.0, True, 10_000.0),
    "oversize": (float(2 << 20), True, float(64 << 20)),
    "expire": None,
    "revoke": None,
    "logout": None,
    "rest429": (1.0, True, 1_000_000.0),
    "rest500": (1.0, True, 1_000_000.0),
    "slow": (5.0, False, 86_400.0),
    "burst": (1000.0, True, 1_000_000.0),
}
assert set(_ARGS) == set(get_args(FaultKind))


class FaultRule(msgspec.Struct, frozen=True):
    """One SPEC item: once ``at``, or ``every`` seconds, or each second with probability ``p``."""

    kind: FaultKind
    arg: float = 0.0
    at: float | None = None
    every: float | None = None
    p: float | None = None


class Fault(msgspec.Struct, frozen=True):
    """One occurrence: ``at`` seconds after the gateway started."""

    kind: FaultKind
    at: float
    arg: float = 0.0


def _number(text: str, what: str, item: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"fault {item!r}: {what} {text!r} is not a number") from None
    return non_negative(f"fault {item!r}: {what}", value)


def parse_faults(spec: str) -> tuple[FaultRule, ...]:
    """``"drop@10,stall@20:5,malformed@every=30:3"`` → rules; ``""`` → no faults."""
    rules = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            if spec.strip():
                raise ConfigError(f"empty fault item in {spec!r}")
            continue
        kind, at_sign, when = item.partition("@")
        if not at_sign:
            raise ConfigError(f"fault {item!r}: expected KIND@WHEN[:ARG], e.g. stall@20:5")
        if kind not in _ARGS:
            raise ConfigError(f"fault {item!r}: unknown kind {kind!r}; known: {', '.join(_ARGS)}")
        when, colon, arg_text = when.partition(":")
        shape = _ARGS[kind]
        if shape is None:
            if colon:
                raise ConfigError(f"fault {item!r}: {kind} takes no argument")
            arg = 0.0
        else:
            default, is_count, bound = shape
            arg = _number(arg_text, "argument", item) if colon else default
            if arg <= 0 or arg > bound or (is_count and arg != int(arg)):
                need = "a whole number" if is_count else "a number"
                raise ConfigError(f"fault {item!r}: argument must be {need} in (0, {bound:g}]")
        if when.startswith("every="):
            every = _number(when[6:], "period", item)
            if every <= 0:
                raise ConfigError(f"fault {item!r}: period must be > 0")
            rules.append(FaultRule(kind, arg, every=every))  # type: ignore[arg-type]
        elif when.startswith("p="):
            p = _number(when[2:], "probability", item)
            if not 0 < p <= 1:
                raise ConfigError(f"fault {item!r}: probability must be in (0, 1]")
            rules.append(FaultRule(kind, arg, p=p))  # type: ignore[arg-type]
        else:
            rules.append(FaultRule(kind, arg, at=_number(when, "time", item)))  # type: ignore[arg-type]
    return tuple(rules)


class FaultSchedule:
    """When each rule fires next; ``due`` consumes what is due.

    Invariant: ``_next[i]`` is rule i's next firing time, or ``inf`` once a
    one-shot rule has fired.
    """

    def __init__(self, rules: tuple[FaultRule, ...], seed: int) -> None:
        self._rules = rules
        self._rngs = [random.Random(f"{seed}/{i}/{rule.kind}") for i, rule in enumerate(rules)]
        self._next = [self._first(i) for i in range(len(rules))]

    @property
    def next_at(self) -> float:
        """Seconds after start of the next fault (``inf``: none left)."""
        return min(self._next, default=math.inf)

    def due(self, elapsed: float) -> list[Fault]:
        out = []
        while self.next_at <= elapsed:
            i = self._next.index(self.next_at)
            rule, at = self._rules[i], self._next[i]
            out.append(Fault(rule.kind, at, rule.arg))
            self._next[i] = self._after(i, at)
        return out

    def _first(self, i: int) -> float:
        rule = self._rules[i]
        if rule.at is not None:
            return rule.at
        return self._after(i, 0.0)

    def _after(self, i: int, at: float) -> float:
        rule = self._rules[i]
        if rule.every is not None:
            return at + rule.every
        if rule.p is not None:  # the next whole second that wins a Bernoulli(p) draw
            if rule.p >= 1:
                return at + 1
            u = self._rngs[i].random()
            return at + 1 + math.floor(math.log1p(-u) / math.log1p(-rule.p))
        return math.inf
