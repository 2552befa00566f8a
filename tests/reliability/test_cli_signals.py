"""Signals are honoured in the steps that used to ignore them (issue 12, item 10).

Before: ``replay /dev/zero`` (endless input without newlines) ignored SIGINT and
SIGTERM, and SIGTERM during the preflight waited for its 10 s timeout, then exit 2.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.subprocess_env import PXNODE, strict_env, wait_until_open

PROMPTLY = 5.0
"""Seconds from the signal to the exit (interpreter shutdown included), far below 10 s."""


@contextmanager
def pxnode(*args: str, **env: str) -> Iterator[subprocess.Popen[str]]:
    """``pxnode ARGS`` in a subprocess, killed if the block fails to stop it."""
    proc = subprocess.Popen(
        [*PXNODE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=strict_env(**env),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def stopped_by(proc: subprocess.Popen[str], signum: int) -> tuple[int, str, float]:
    start = time.monotonic()
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=PROMPTLY * 2)
    return proc.returncode, stderr, time.monotonic() - start


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_replay_of_endless_input_without_newlines_stops_on_a_signal(
    tmp_path: Path, signum: int, code: int
) -> None:
    out = tmp_path / "bars.csv"
    with pxnode("replay", "/dev/zero", "--out", str(out)) as proc:
        wait_until_open(proc, "/dev/zero")
        time.sleep(0.2)  # well into it
        returncode, stderr, took = stopped_by(proc, signum)
    assert (returncode, stderr) == (code, "")
    assert took < PROMPTLY
    assert not out.exists()


def test_sigterm_during_the_preflight_is_honoured_at_once() -> None:
    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        credentials = {"PROJECT_X_USERNAME": "demo", "PROJECT_X_API_KEY": "demo-api-key"}
        run = ("run", "--contracts", "CON.F.US.MNQ.Z25", "--api-url", url)
        with pxnode(*run, **credentials) as proc:
            silent.settimeout(20)
            connection, _ = silent.accept()  # the preflight's GET /api/Status/ping is waiting
            with connection:
                returncode, stderr, took = stopped_by(proc, signal.SIGTERM)
    assert (returncode, stderr) == (0, "")
    assert took < PROMPTLY
