"""Shared fixtures: virtual time for trio tests, both anyio backends for node tests.

Fuzz tests draw new examples on every run, except under ``HYPOTHESIS_PROFILE=ci``
(.ci/run): CI draws the same examples every time, so a red CI is always the
change's doing; what a random run finds becomes a regression test.
"""

from __future__ import annotations

import os

import pytest
import trio.testing
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Hours of timeouts in milliseconds: time jumps whenever every task is blocked."""
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
