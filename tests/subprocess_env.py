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
from collections.abc import Iterator
from contextlib import contextmanager

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
