"""Config number checks: NaN, inf, bool and wrong types are refused the same way everywhere."""

from __future__ import annotations

import math

import pytest

from protocols.checks import count, finite, is_finite, non_negative, positive
from protocols.errors import ConfigError

NOT_NUMBERS: list[object] = [math.nan, math.inf, -math.inf, True, False, "5", None, [1], 10**400]


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_what_is_no_finite_number_is_refused_by_every_check(value: object) -> None:
    for check in (finite, non_negative, positive):
        with pytest.raises(ConfigError, match=r"^field must be a finite number"):
            check("field", value)
    assert not is_finite(value)


def test_ranges_pass_at_exactly_their_bound() -> None:
    assert finite("x", -3) == -3.0 and isinstance(finite("x", 2), float)
    assert non_negative("x", 0) == 0.0
    with pytest.raises(ConfigError, match=r">= 0, got -0\.5"):
        non_negative("x", -0.5)
    assert positive("x", 1e-9) == 1e-9
    with pytest.raises(ConfigError, match="> 0, got 0"):
        positive("x", 0)


@pytest.mark.parametrize("value", [0, -1, 1.0, True, "2", math.nan])
def test_a_count_is_an_integer_of_at_least_its_minimum(value: object) -> None:
    with pytest.raises(ConfigError, match="must be an integer >= 1"):
        count("n", value)
    assert count("n", 1) == 1 and count("n", 0, minimum=0) == 0
