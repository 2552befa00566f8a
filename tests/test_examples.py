"""The runnable examples in examples/ keep working (the pytest one is collected directly)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.subprocess_env import strict_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "expected"),
    [("embed_trio.py", "closed 1sec"), ("embed_asyncio.py", "trades; healthy=")],
)
def test_example_runs(script: str, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "2.5"],
        capture_output=True,
        text=True,
        timeout=60,
        env=strict_env(),
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
