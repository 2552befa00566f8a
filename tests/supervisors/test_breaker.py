from __future__ import annotations

import math
import random

import pytest

from protocols.errors import ConfigError
from supervisors.backoff import Backoff
from supervisors.breaker import (
    BreakerPolicy,
    CircuitBreaker,
    Escalate,
    Restart,
    Transition,
)

EXACT = BreakerPolicy(jitter=0.0, backoff=Backoff(jitter=0.0))  # defaults, no randomness


def breaker(policy: BreakerPolicy = EXACT, seed: int = 0) -> CircuitBreaker:
    return CircuitBreaker(policy, random.Random(seed))


def trip(b: CircuitBreaker, now: float = 0.0) -> tuple[float, list[Transition]]:
    """Fail 5 times (the default threshold) at ``now``; return the cool-down and transitions."""
    for _ in range(4):
        action, transitions = b.on_failure(now)
        assert isinstance(action, Restart)
        assert transitions == []
    action, transitions = b.on_failure(now)
    assert isinstance(action, Restart)
    return action.delay, transitions


def fail_probe(b: CircuitBreaker, now: float) -> tuple[Restart | Escalate, list[Transition]]:
    assert b.on_cooldown_elapsed(now) == [Transition("open", "half_open")]
    return b.on_failure(now)


# ------------------------------------------------------------------ policy


def test_defaults_equal_design() -> None:
    p = BreakerPolicy()
    assert p.failure_threshold == 5
    assert p.window == 60.0
    assert p.cooldown == 30.0
    assert p.max_cooldown == 300.0
    assert p.max_open_cycles == 5
    assert p.backoff == Backoff()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": -5}, "failure_threshold"),
        ({"failure_threshold": 2.5}, "failure_threshold"),
        ({"failure_threshold": True}, "failure_threshold"),
        ({"failure_threshold": "5"}, "failure_threshold"),
        ({"window": 0.0}, "window"),
        ({"window": -1.0}, "window"),
        ({"window": math.nan}, "window"),
        ({"window": math.inf}, "window"),
        ({"cooldown": -1.0}, "cooldown"),
        ({"cooldown": math.nan}, "cooldown"),
        ({"cooldown": None}, "cooldown"),
        ({"max_cooldown": 10.0}, "max_cooldown"),
        ({"max_cooldown": math.inf}, "max_cooldown"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": math.nan}, "jitter"),
        ({"max_open_cycles": 0}, "max_open_cycles"),
        ({"max_open_cycles": 1.0}, "max_open_cycles"),
        ({"backoff": 0.1}, "backoff"),
    ],
)
def test_bad_policy_raises_config_error(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        BreakerPolicy(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ CLOSED


def test_starts_closed() -> None:
    assert breaker().state == "closed"


def test_below_threshold_stays_closed_with_backoff_delays() -> None:
    b = breaker()
    got = [b.on_failure(float(t)) for t in range(4)]
    assert got == [(Restart(d), []) for d in (0.1, 0.2, 0.4, 0.8)]
    assert b.state == "closed"


def test_closed_delays_use_the_backoff_with_the_injected_rng() -> None:
    policy = BreakerPolicy(failure_threshold=100)
    b = CircuitBreaker(policy, random.Random(9))
    ref = random.Random(9)
    for n in range(20):
        action, _ = b.on_failure(float(n))
        assert action == Restart(policy.backoff.delay(n, ref))


def test_failures_spread_beyond_the_window_never_trip() -> None:
    b = breaker()
    for n in range(200):  # 5 consecutive failures span exactly 60 s: never all inside
        action, transitions = b.on_failure(n * 15.0)
        assert isinstance(action, Restart)
        assert transitions == []
    assert b.state == "closed"


def test_exactly_threshold_failures_in_window_trip() -> None:
    b = breaker()
    for t in (0.0, 10.0, 20.0, 30.0):
        b.on_failure(t)
    action, transitions = b.on_failure(59.999)
    assert action == Restart(30.0)
    assert transitions == [Transition("closed", "open", 30.0)]
    assert b.state == "open"


def test_failure_exactly_window_old_no_longer_counts() -> None:
    # the window is (now - window, now]: the failure at 0 is out of it at 60
    b = breaker()
    for t in (0.0, 10.0, 20.0, 30.0):
        b.on_failure(t)
    assert b.on_failure(60.0)[1] == []
    assert b.state == "closed"
    # the next one has 5 failures within (1, 61]
    assert b.on_failure(61.0)[1] == [Transition("closed", "open", 30.0)]


def test_threshold_one_trips_on_first_failure() -> None:
    b = breaker(BreakerPolicy(failure_threshold=1, jitter=0.0))
    assert b.on_failure(0.0) == (Restart(30.0), [Transition("closed", "open", 30.0)])


def test_backoff_attempt_resets_after_a_stable_run() -> None:
    # the run time is measured from the restart the breaker scheduled
    backoff = Backoff(min_backoff=0.5, jitter=0.0, reset_after=60.0)
    b = breaker(BreakerPolicy(failure_threshold=100, backoff=backoff))
    assert b.on_failure(0.0)[0] == Restart(0.5)  # child back at 0.5
    assert b.on_failure(1.5)[0] == Restart(1.0)  # back at 2.5
    assert b.on_failure(62.0)[0] == Restart(2.0)  # ran 59.5 s: not stable yet, back at 64
    assert b.on_failure(124.0)[0] == Restart(0.5)  # ran exactly 60 s: attempt 0 again
    assert b.on_failure(125.0)[0] == Restart(1.0)


def test_healthy_while_closed_changes_nothing() -> None:
    b = breaker()
    for t in range(4):
        b.on_failure(float(t))
    assert b.on_healthy(4.0) == []
    assert b.state == "closed"
    # the failure history survives: a flapping child that reports healthy still trips
    assert b.on_failure(5.0)[1] == [Transition("closed", "open", 30.0)]


def test_history_is_bounded_by_the_threshold() -> None:
    b = breaker()
    for n in range(100_000):
        b.on_failure(n * 20.0)
        assert len(b._recent) <= 5
    assert b.state == "closed"
    assert b._recent.maxlen == 5


# ------------------------------------------------------------- OPEN / HALF_OPEN


def test_cooldown_elapsed_opens_half_open() -> None:
    b = breaker()
    trip(b)
    assert b.on_cooldown_elapsed(30.0) == [Transition("open", "half_open")]
    assert b.state == "half_open"


def test_healthy_probe_closes() -> None:
    b = breaker()
    trip(b)
    b.on_cooldown_elapsed(30.0)
    assert b.on_healthy(31.0) == [Transition("half_open", "closed")]
    assert b.state == "closed"


def test_a_probe_that_only_starts_does_not_close() -> None:
    b = breaker()
    trip(b)
    b.on_cooldown_elapsed(30.0)
    assert b.state == "half_open"  # started, not healthy: still half open
    assert b.on_failure(31.0)[1] == [Transition("half_open", "open", 60.0)]


def test_failed_probe_reopens_with_doubled_cooldown() -> None:
    b = breaker()
    trip(b)
    action, transitions = fail_probe(b, 30.0)
    assert action == Restart(60.0)
    assert transitions == [Transition("half_open", "open", 60.0)]
    assert b.state == "open"


def test_cooldown_doubles_to_the_cap() -> None:
    b = breaker(BreakerPolicy(jitter=0.0, max_open_cycles=10))
    cooldowns = [trip(b)[0]]
    now = 0.0
    for _ in range(5):
        now += cooldowns[-1]
        action, _ = fail_probe(b, now)
        assert isinstance(action, Restart)
        cooldowns.append(action.delay)
    assert cooldowns == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]


@pytest.mark.parametrize("seed", range(20))
def test_jittered_cooldown_stays_within_bounds(seed: int) -> None:
    b = breaker(BreakerPolicy(jitter=0.1, max_open_cycles=50), seed=seed)
    cooldown, transitions = trip(b)
    assert 27.0 <= cooldown <= 33.0
    assert transitions == [Transition("closed", "open", cooldown)]
    base, now = 30.0, 0.0
    for _ in range(40):
        now += cooldown
        action, transitions = fail_probe(b, now)
        assert isinstance(action, Restart)
        cooldown = action.delay
        base = min(base * 2, 300.0)
        assert base * 0.9 <= cooldown <= base * 1.1
        assert transitions == [Transition("half_open", "open", cooldown)]


def test_jittered_cooldowns_are_reproducible_from_the_seed() -> None:
    def cooldowns(seed: int) -> list[float]:
        b = breaker(BreakerPolicy(max_open_cycles=10), seed=seed)
        out = [trip(b)[0]]
        for _ in range(8):
            action, _ = fail_probe(b, 0.0)
            assert isinstance(action, Restart)
            out.append(action.delay)
        return out

    assert cooldowns(5) == cooldowns(5)
    assert cooldowns(5) != cooldowns(6)


def test_escalates_after_k_open_cycles() -> None:
    b = breaker()
    seen = [trip(b)[0]]
    for _ in range(4):
        action, _ = fail_probe(b, 0.0)
        assert isinstance(action, Restart)
        seen.append(action.delay)
    assert seen == [30.0, 60.0, 120.0, 240.0, 300.0]  # five open cycles
    action, transitions = fail_probe(b, 0.0)
    assert action == Escalate("breaker: 5 open cycles without recovery")
    assert transitions == []
    assert b.state == "half_open"


def test_max_open_cycles_one_escalates_on_first_failed_probe() -> None:
    b = breaker(BreakerPolicy(jitter=0.0, max_open_cycles=1))
    trip(b)
    assert isinstance(fail_probe(b, 30.0)[0], Escalate)


def test_recovery_resets_cycles_history_and_backoff() -> None:
    b = breaker()
    trip(b)
    for _ in range(3):
        fail_probe(b, 0.0)  # four open cycles used
    b.on_cooldown_elapsed(0.0)
    assert b.on_healthy(1.0) == [Transition("half_open", "closed")]

    # history forgotten: four new failures do not trip, backoff starts at attempt 0
    got = [b.on_failure(2.0) for _ in range(4)]
    assert got == [(Restart(d), []) for d in (0.1, 0.2, 0.4, 0.8)]
    # cycles forgotten: the full K cycles are available again, starting at 30 s
    cooldown, transitions = b.on_failure(2.0)
    assert (cooldown, transitions) == (Restart(30.0), [Transition("closed", "open", 30.0)])
    for _ in range(4):
        assert isinstance(fail_probe(b, 2.0)[0], Restart)
    assert isinstance(fail_probe(b, 2.0)[0], Escalate)


def test_healthy_while_open_is_ignored() -> None:
    b = breaker()
    trip(b)
    assert b.on_healthy(1.0) == []  # the late report of the probe that just failed
    assert b.state == "open"


# ------------------------------------------------------------- misuse and bad time


def test_failure_while_open_is_a_supervisor_bug() -> None:
    b = breaker()
    trip(b)
    with pytest.raises(RuntimeError, match="'failure' is not possible while open"):
        b.on_failure(1.0)
    assert b.state == "open"


@pytest.mark.parametrize("state", ["closed", "half_open"])
def test_cooldown_elapsed_outside_open_is_a_supervisor_bug(state: str) -> None:
    b = breaker()
    if state == "half_open":
        trip(b)
        b.on_cooldown_elapsed(30.0)
    with pytest.raises(RuntimeError, match="cooldown_elapsed"):
        b.on_cooldown_elapsed(30.0)
    assert b.state == state


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_non_finite_time_is_rejected(now: float) -> None:
    b = breaker()
    for event in (b.on_failure, b.on_healthy, b.on_cooldown_elapsed):
        with pytest.raises(ValueError, match="finite"):
            event(now)
    assert b.state == "closed"
    assert b.on_failure(0.0)[0] == Restart(0.1)  # nothing was recorded


def test_time_running_backwards_is_rejected() -> None:
    b = breaker()
    b.on_failure(10.0)
    with pytest.raises(ValueError, match="backwards"):
        b.on_failure(9.0)
    assert b.on_failure(10.0)[0] == Restart(0.2)  # same instant is fine


def in_state(state: str) -> CircuitBreaker:
    """A breaker driven into ``state`` through its public events."""
    b = breaker()
    now = 0.0
    if state != "closed":
        while b.state == "closed":
            now += 0.01
            b.on_failure(now)
    if state == "half_open":
        b.on_cooldown_elapsed(now + 1000)
    assert b.state == state
    return b


@pytest.mark.parametrize("state", ["closed", "open", "half_open"])
def test_every_event_in_every_state_is_handled_or_refused_loudly(state: str) -> None:
    """Each (state, event) either acts or raises: none is silently ignored."""
    events = {
        "failure": CircuitBreaker.on_failure,
        "healthy": CircuitBreaker.on_healthy,
        "cooldown_elapsed": CircuitBreaker.on_cooldown_elapsed,
    }
    impossible = {
        ("closed", "cooldown_elapsed"),
        ("open", "failure"),
        ("half_open", "cooldown_elapsed"),
    }
    for name, event in events.items():
        b = in_state(state)
        if (state, name) in impossible:  # a supervisor bug: never a silent no-op
            with pytest.raises(RuntimeError, match="not possible"):
                event(b, 5000.0)
            assert b.state == state
        else:
            event(b, 5000.0)
