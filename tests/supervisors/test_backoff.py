from __future__ import annotations

import math
import random

import pytest

from protocols.errors import ConfigError
from supervisors.backoff import NO_BACKOFF, Backoff


def test_defaults() -> None:
    b = Backoff()
    assert (b.min_backoff, b.max_backoff, b.factor, b.jitter, b.reset_after) == (
        0.1,
        30.0,
        2.0,
        0.2,
        60.0,
    )


def test_without_jitter_delays_double_up_to_the_cap() -> None:
    b = Backoff(min_backoff=0.5, max_backoff=10.0, factor=2.0, jitter=0.0)
    rng = random.Random(1)
    assert [b.delay(n, rng) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_without_jitter_the_rng_is_not_drawn() -> None:
    rng = random.Random(7)
    Backoff(jitter=0.0).delay(3, rng)
    assert rng.random() == random.Random(7).random()


def test_seeded_delays_are_exact_and_reproducible() -> None:
    b = Backoff()  # 0.1 * 2**n capped at 30, jitter 0.2
    rng = random.Random(42)
    got = [b.delay(n, rng) for n in range(15)]

    ref = random.Random(42)
    expected = [min(0.1 * 2.0**n, 30.0) * (1.0 + ref.uniform(-0.2, 0.2)) for n in range(15)]
    assert got == expected
    assert got[-1] != 30.0  # jitter applies on the cap too


def test_same_seed_same_delays_other_seed_other_delays() -> None:
    b = Backoff()
    first = [b.delay(n, r) for r in [random.Random(3)] for n in range(10)]
    again = [b.delay(n, r) for r in [random.Random(3)] for n in range(10)]
    other = [b.delay(n, r) for r in [random.Random(4)] for n in range(10)]
    assert first == again
    assert first != other


@pytest.mark.parametrize("jitter", [0.0, 0.2, 0.5, 0.999])
def test_jittered_delay_stays_within_bounds(jitter: float) -> None:
    b = Backoff(min_backoff=0.1, max_backoff=5.0, jitter=jitter)
    rng = random.Random(0)
    for n in range(40):
        base = min(0.1 * 2.0**n, 5.0)
        for _ in range(50):
            d = b.delay(n, rng)
            assert base * (1 - jitter) <= d <= base * (1 + jitter)
            assert 0.0 <= d <= 5.0 * (1 + jitter)


def test_huge_attempt_is_capped_not_an_overflow() -> None:
    b = Backoff(jitter=0.0)
    assert b.delay(10**6, random.Random(0)) == 30.0
    assert Backoff(min_backoff=0.0, max_backoff=1.0, jitter=0.0).delay(10**6, random.Random()) == 0


def test_factor_one_is_constant() -> None:
    b = Backoff(min_backoff=2.0, max_backoff=9.0, factor=1.0, jitter=0.0)
    assert {b.delay(n, random.Random()) for n in range(100)} == {2.0}


def test_no_backoff_restarts_at_once() -> None:
    rng = random.Random(0)
    assert [NO_BACKOFF.delay(n, rng) for n in (0, 1, 5, 10**6)] == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("attempt", [-1, -(10**9)])
def test_negative_attempt_is_rejected(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt"):
        Backoff().delay(attempt, random.Random())


@pytest.mark.parametrize("attempt", [1.5, "2", None, math.nan])
def test_non_integer_attempt_is_rejected(attempt: object) -> None:
    with pytest.raises(TypeError):
        Backoff().delay(attempt, random.Random())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_backoff": -0.1}, "min_backoff"),
        ({"min_backoff": math.nan}, "min_backoff"),
        ({"min_backoff": math.inf, "max_backoff": math.inf}, "min_backoff"),
        ({"min_backoff": "1"}, "min_backoff"),
        ({"min_backoff": True}, "min_backoff"),
        ({"max_backoff": 0.05}, "max_backoff"),
        ({"max_backoff": math.nan}, "max_backoff"),
        ({"max_backoff": math.inf}, "max_backoff"),
        ({"max_backoff": None}, "max_backoff"),
        ({"factor": 0.5}, "factor"),
        ({"factor": 0}, "factor"),
        ({"factor": -2.0}, "factor"),
        ({"factor": math.nan}, "factor"),
        ({"factor": math.inf}, "factor"),
        ({"jitter": -0.01}, "jitter"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": 5}, "jitter"),
        ({"jitter": math.nan}, "jitter"),
        ({"reset_after": 0.0}, "reset_after"),
        ({"reset_after": -60.0}, "reset_after"),
        ({"reset_after": math.nan}, "reset_after"),
        ({"reset_after": math.inf}, "reset_after"),
        ({"reset_after": "60"}, "reset_after"),
    ],
)
def test_bad_parameters_raise_config_error(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_edge_parameters_are_accepted() -> None:
    Backoff(min_backoff=0.0, max_backoff=0.0, factor=1.0, jitter=0.0, reset_after=1e-9)
    Backoff(min_backoff=1, max_backoff=1, factor=1, jitter=0.999, reset_after=1)


def test_is_frozen() -> None:
    b = Backoff()
    with pytest.raises(AttributeError):
        b.min_backoff = 1.0  # type: ignore[misc]
