"""The registry's wall clock: read per call, so a step of the system clock is seen at once."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from supervisors.registry import Registry, WallClock


@pytest.mark.trio
async def test_wall_time_follows_a_step_of_the_system_clock(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anchored once, a suspend or an NTP step left the node an hour behind: every good
    trade was 'future'. Now the step is taken up at the next read."""
    registry = Registry()
    before = registry.wall_time()
    assert abs(before - time.time()) < 1
    stepped = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: stepped)
    assert registry.wall_time() == pytest.approx(before + 3600, abs=1)


@pytest.mark.trio
async def test_wall_time_moves_with_virtual_time_and_ignores_read_jitter(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = WallClock()
    start = clock()
    await anyio.sleep(60)
    assert clock() == pytest.approx(start + 60, abs=0.05)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 0.01)  # jitter below WallClock.STEP
    first = clock()
    assert clock() >= first and first == pytest.approx(start + 60, abs=0.05)
