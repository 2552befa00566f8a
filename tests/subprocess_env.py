"""The environment of tests that run pxnode in a subprocess: every warning is an error.

Like pyproject's pytest ``filterwarnings``, with the same single exception: httpx's
own ByteStream generator warning when trio cancels a request mid-send at shutdown
(encode/httpx#3686), which is not a leak of ours.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WARNINGS = (
    "error,"
    "ignore:Async generator 'httpx._content.ByteStream.__aiter__' was garbage collected"
    ":ResourceWarning"
)


def strict_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": WARNINGS, **extra}


PXNODE = [sys.executable, "-c", "from pxnode.cli import main; main()"]
"""The ``pxnode`` entry point as a command line (works without the installed script)."""


@contextmanager
def gateway(*args: str, **env: str) -> Iterator[str]:
    """``pxnode gateway ARGS`` (``env`` added to its environment) in a subprocess for the
    body of the block; yields its URL."""
    process = subprocess.Popen(
        [*PXNODE, "gateway", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=strict_env(**env),
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().split()[-3]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)


def wait_until_open(process: subprocess.Popen[str], path: str | Path, timeout: float = 30) -> None:
    """Wait until ``process`` has ``path`` open (Linux /proc): past its imports and its
    signal set-up, under way, however slow the machine is today."""
    target = str(Path(path).resolve())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the process ended"
        fds = Path(f"/proc/{process.pid}/fd")
        try:
            if any(str(fd.readlink()) == target for fd in fds.iterdir()):
                return
        except OSError:  # a descriptor closed while looking
            pass
        time.sleep(0.02)
    raise AssertionError(f"{target} was not opened within {timeout} s")
