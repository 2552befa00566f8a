"""The circuit breaker: a restart policy that stops hammering a dependency that is down.

Theory of operation
-------------------
A supervisor owns one ``CircuitBreaker`` per child and feeds it three events:
the child failed (``on_failure``), the cool-down the breaker asked for is over
(``on_cooldown_elapsed``), the child reported healthy (``on_healthy``). The
breaker answers with what to do next (``Restart(delay)`` or ``Escalate``) and
with the state transitions it made, which the supervisor publishes so health
and stats see every one of them.

    CLOSED ──N failures in window──▶ OPEN ──cool-down──▶ HALF_OPEN ──healthy──▶ CLOSED
                                      ▲                     │
                                      └──probe failed───────┘  (K open cycles: escalate)

* CLOSED: the child runs; each failure restarts it after ``policy.backoff``'s
  delay. ``failure_threshold`` failures within ``window`` seconds, counted over
  the half-open interval ``(now - window, now]`` (a failure exactly ``window``
  seconds old no longer counts), trip the breaker.
* OPEN: no child runs. The Restart that opened the breaker carries the
  cool-down as its delay; once it has passed the supervisor calls
  ``on_cooldown_elapsed`` and starts exactly one probe.
* HALF_OPEN: the probe runs. Only a healthy report closes the breaker: a probe
  that merely starts proves nothing (a hub that accepts the socket and then
  rejects the token would otherwise flap CLOSED/OPEN forever), so "closed but
  not yet healthy" cannot happen. A failed probe reopens with a doubled
  cool-down (capped at ``max_cooldown``, jittered); after ``max_open_cycles``
  open cycles without recovery the breaker gives up and the supervisor
  escalates to its parent.

Events the table does not list are supervisor bugs and raise RuntimeError: a
failure while OPEN (no child is running then) or a cool-down ending in a state
that never started one. A healthy report while OPEN is ignored: it is the late
report of the probe that has just failed, and must not close the breaker.

After ``Escalate`` the breaker is spent and stays HALF_OPEN; the supervisor
that received it stops using it (its parent restarts it with a fresh one).

The breaker is pure: ``now`` comes from the caller (``anyio.current_time()``)
and randomness from the injected ``random.Random``, so seeded tests replay
exactly and a virtual clock can run hours of outages in milliseconds.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from protocols.checks import count, finite
from protocols.errors import ConfigError
from protocols.messages import BreakerState
from supervisors.backoff import Backoff


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When to trip, how long to stay open, when to give up (docs/architecture.md)."""

    failure_threshold: int = 5
    window: float = 60.0
    cooldown: float = 30.0
    max_cooldown: float = 300.0
    jitter: float = 0.1
    max_open_cycles: int = 5
    backoff: Backoff = field(default_factory=Backoff)

    def __post_init__(self) -> None:
        count("failure_threshold", self.failure_threshold)
        count("max_open_cycles", self.max_open_cycles)
        if finite("window", self.window) <= 0:
            raise ConfigError(f"window must be > 0, got {self.window!r}")
        if finite("cooldown", self.cooldown) < 0:
            raise ConfigError(f"cooldown must be >= 0, got {self.cooldown!r}")
        if finite("max_cooldown", self.max_cooldown) < self.cooldown:
            raise ConfigError(
                f"max_cooldown must be >= cooldown ({self.cooldown!r}), got {self.max_cooldown!r}"
            )
        if not 0 <= finite("jitter", self.jitter) < 1:
            raise ConfigError(f"jitter must be in [0, 1), got {self.jitter!r}")
        if not isinstance(self.backoff, Backoff):
            raise ConfigError(f"backoff must be a Backoff, got {self.backoff!r}")


@dataclass(frozen=True, slots=True)
class Restart:
    """Start the child (or the probe) again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class Escalate:
    """Give up on the child and hand the failure to the parent supervisor."""

    reason: str


Action = Restart | Escalate


@dataclass(frozen=True, slots=True)
class Transition:
    """The breaker moved from ``old`` to ``new``; ``cooldown`` is set when it opened."""

    old: BreakerState
    new: BreakerState
    cooldown: float = 0.0


_Event = Literal["failure", "cooldown_elapsed", "healthy"]


class _Step(NamedTuple):
    """What a handler decided: the next state (may be the same) and the action, if any."""

    state: BreakerState
    action: Action | None = None
    cooldown: float = 0.0


class CircuitBreaker:
    """One child's breaker; the transition table is ``_TABLE`` below the class."""

    def __init__(self, policy: BreakerPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self._state: BreakerState = "closed"
        # Cool-downs follow the same capped, doubling, jittered schedule as restarts.
        self._cooldowns = Backoff(
            min_backoff=policy.cooldown,
            max_backoff=policy.max_cooldown,
            factor=2.0,
            jitter=policy.jitter,
        )
        # Times of the latest failures while CLOSED; only the newest
        # ``failure_threshold`` can decide a trip, so memory stays bounded.
        self._recent: deque[float] = deque(maxlen=policy.failure_threshold)
        self._consecutive = 0  # failures since the last reset, the backoff attempt + 1
        self._resumed_at = -math.inf  # when the last CLOSED restart brought the child back
        self._open_cycles = 0  # OPEN periods since the breaker was last CLOSED
        self._now = -math.inf  # latest time seen; time never runs backwards

    @property
    def state(self) -> BreakerState:
        return self._state

    def on_failure(self, now: float) -> tuple[Action, list[Transition]]:
        """The child (or the probe) failed: restart it after a delay, or escalate."""
        action, transitions = self._fire("failure", now)
        assert action is not None  # invariant: every failure handler decides an action
        return action, transitions

    def on_cooldown_elapsed(self, now: float) -> list[Transition]:
        """The cool-down is over: go HALF_OPEN; the supervisor starts exactly one probe."""
        return self._fire("cooldown_elapsed", now)[1]

    def on_healthy(self, now: float) -> list[Transition]:
        """The child reported healthy: closes a HALF_OPEN breaker, otherwise changes nothing."""
        return self._fire("healthy", now)[1]

    def _fire(self, event: _Event, now: float) -> tuple[Action | None, list[Transition]]:
        if not math.isfinite(now):
            raise ValueError(f"breaker: now must be finite, got {now!r}")
        if now < self._now:
            raise ValueError(f"breaker: time went backwards ({now!r} < {self._now!r})")
        self._now = now
        handler = _TABLE.get((self._state, event))
        if handler is None:
            raise RuntimeError(f"breaker: event {event!r} is not possible while {self._state}")
        step = handler(self, now)
        if step.state == self._state:
            return step.action, []
        transition = Transition(self._state, step.state, step.cooldown)
        self._state = step.state
        return step.action, [transition]

    # ------------------------------------------------------------- handlers

    def _count_failure(self, now: float) -> _Step:
        backoff = self._policy.backoff
        if now - self._resumed_at >= backoff.reset_after:
            self._consecutive = 0  # it ran long enough: this is a fresh failure
        self._consecutive += 1
        self._recent.append(now)
        window_start = now - self._policy.window
        if len(self._recent) == self._recent.maxlen and self._recent[0] > window_start:
            return self._open(cycle=1)
        delay = backoff.delay(self._consecutive - 1, self._rng)
        self._resumed_at = now + delay
        return _Step("closed", Restart(delay))

    def _start_probe(self, now: float) -> _Step:
        return _Step("half_open")

    def _reopen_or_escalate(self, now: float) -> _Step:
        if self._open_cycles >= self._policy.max_open_cycles:
            reason = f"breaker: {self._open_cycles} open cycles without recovery"
            return _Step("half_open", Escalate(reason))
        return self._open(cycle=self._open_cycles + 1)

    def _recover(self, now: float) -> _Step:
        self._open_cycles = 0
        self._consecutive = 0
        self._recent.clear()
        return _Step("closed")

    def _stay(self, now: float) -> _Step:
        return _Step(self._state)

    def _open(self, cycle: int) -> _Step:
        # cycle 1 waits ``cooldown``, each further cycle twice the previous one, up to the cap
        self._open_cycles = cycle
        cooldown = self._cooldowns.delay(cycle - 1, self._rng)
        return _Step("open", Restart(cooldown), cooldown)


# (state, event) -> handler. A missing pair is a supervisor bug and raises.
_TABLE: dict[tuple[BreakerState, _Event], Callable[[CircuitBreaker, float], _Step]] = {
    ("closed", "failure"): CircuitBreaker._count_failure,  # restart, or trip -> OPEN
    ("closed", "healthy"): CircuitBreaker._stay,  # already closed: nothing to learn
    ("open", "cooldown_elapsed"): CircuitBreaker._start_probe,  # -> HALF_OPEN
    ("open", "healthy"): CircuitBreaker._stay,  # late report of the probe that failed
    ("half_open", "failure"): CircuitBreaker._reopen_or_escalate,  # -> OPEN, or give up
    ("half_open", "healthy"): CircuitBreaker._recover,  # -> CLOSED, history forgotten
}
