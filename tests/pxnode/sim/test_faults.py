"""The fault SPEC mini-language and its seeded schedule."""

from __future__ import annotations

import math

import pytest

from protocols.errors import ConfigError
from pxnode.sim import SimConfig
from pxnode.sim.faults import Fault, FaultRule, FaultSchedule, parse_faults

EXAMPLE = (
    "drop@10,stall@20:5,malformed@30:3,oversize@40,expire@50,revoke@60,"
    "rest429@70:2,rest500@80,slow@90:5,burst@100:5000"
)


def test_the_documented_example_parses() -> None:
    rules = parse_faults(EXAMPLE)
    assert [r.kind for r in rules] == [
        "drop", "stall", "malformed", "oversize", "expire", "revoke", "rest429", "rest500",
        "slow", "burst",
    ]  # fmt: skip
    assert rules[1] == FaultRule("stall", 5.0, at=20.0)
    assert rules[3].arg == 2 << 20  # default size
    assert rules[9].arg == 5000 and rules[0].arg == 0.0


def test_periodic_and_random_forms() -> None:
    every, maybe = parse_faults(" drop@every=2.5 , malformed@p=0.5:2 ")
    assert every == FaultRule("drop", 0.0, every=2.5)
    assert maybe == FaultRule("malformed", 2.0, p=0.5)
    assert parse_faults("") == () and parse_faults("  ") == ()


@pytest.mark.parametrize(
    "spec",
    [
        "drop",  # no @
        "explode@1",  # unknown kind
        "drop@1:2",  # drop takes no argument
        "stall@x",  # time not a number
        "stall@-1",  # negative time
        "stall@nan",
        "stall@inf",
        "stall@1:0",  # argument must be > 0
        "malformed@1:1.5",  # counts are whole
        "burst@1:10000000",  # over the bound
        "drop@every=0",
        "drop@p=0",
        "drop@p=1.5",
        "drop@1,,stall@2",  # empty item
        "stall@1:",  # empty argument
    ],
)
def test_every_mistake_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="fault"):
        parse_faults(spec)


def test_config_checks_the_spec() -> None:
    with pytest.raises(ConfigError):
        SimConfig(faults="drop@soon")


def test_schedule_orders_one_shots_and_periods() -> None:
    schedule = FaultSchedule(parse_faults("stall@3:1,drop@every=2,expire@3"), seed=1)
    assert schedule.next_at == 2
    assert schedule.due(1.9) == []
    assert schedule.due(2.0) == [Fault("drop", 2.0)]
    assert schedule.due(4.0) == [Fault("stall", 3.0, 1.0), Fault("expire", 3.0), Fault("drop", 4.0)]
    assert schedule.next_at == 6.0


def test_random_faults_are_seeded_whole_seconds() -> None:
    def times(seed: int) -> list[float]:
        schedule = FaultSchedule(parse_faults("drop@p=0.1"), seed)
        return [f.at for f in schedule.due(1000)]

    first = times(7)
    assert first == times(7) and first != times(8)
    assert all(t == int(t) for t in first) and 60 < len(first) < 140
    always = FaultSchedule(parse_faults("drop@p=1"), 1)
    assert [f.at for f in always.due(3)] == [1.0, 2.0, 3.0]


def test_an_exhausted_schedule_says_so() -> None:
    schedule = FaultSchedule(parse_faults("drop@1"), 1)
    assert len(schedule.due(5)) == 1 and schedule.next_at == math.inf
    assert FaultSchedule((), 1).next_at == math.inf
