"""The README's promise through the real entry point: one line ``pxnode: error: ...``, exit 2.

Every case here printed a traceback (or died) before issue 12.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from pxnode.cli import app
from tests.subprocess_env import strict_env

runner = CliRunner()


def one_line_error(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pxnode: error: "), result.stderr
    assert message in lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port someone else is listening on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.fixture
def tape(tmp_path: Path) -> Path:
    path = tmp_path / "t.tape"
    path.write_text("not json\n")
    return path


def test_replay_into_a_missing_directory(tape: Path) -> None:
    one_line_error(
        ["replay", str(tape), "--out", "/nonexistent/x.csv"],
        "no such directory '/nonexistent'",
    )


def test_replay_into_a_directory(tape: Path, tmp_path: Path) -> None:
    out = tmp_path / "bars.csv"
    out.mkdir()
    one_line_error(["replay", str(tape), "--out", str(out)], "is a directory")


def test_a_replay_output_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    from protocols.errors import PxError
    from pxnode.replay import write_bars

    (tmp_path / "file").write_text("")
    with pytest.raises(PxError, match=r"cannot write .*Not a directory"):
        write_bars([], tmp_path / "file" / "bars.parquet")


def test_gateway_port_in_use(busy_port: int) -> None:
    one_line_error(["gateway", "--port", str(busy_port)], "Address already in use")


def test_gateway_host_that_does_not_resolve() -> None:
    one_line_error(["gateway", "--host", "nosuchhost.invalid"], "cannot listen on nosuchhost")


def test_metrics_port_in_use(busy_port: int) -> None:
    one_line_error(
        ["demo", "--metrics-port", str(busy_port), "--duration", "1"],
        f"--metrics-port: cannot listen on 127.0.0.1:{busy_port}: Address already in use",
    )


@pytest.mark.parametrize("port", ["70000", "-5"])
def test_metrics_port_out_of_range(port: str) -> None:
    one_line_error(["demo", "--metrics-port", port, "--duration", "1"], "port must be 0..65535")


# ------------------------------------------------------------- out of descriptors


def _few_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))


@pytest.mark.slow
def test_the_gateway_outlives_running_out_of_file_descriptors() -> None:
    """More idle clients than descriptors (EMFILE on accept): the sim waits, counts, serves on."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from pxnode.cli import main; main()", "gateway"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=strict_env(),
        preexec_fn=_few_descriptors,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-3]
        port = int(url.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(80)]
        try:
            with httpx.Client(base_url=url, timeout=1.0) as http, pytest.raises(httpx.HTTPError):
                http.get("/api/Status/ping")  # queued behind the full descriptor table
        finally:
            for s in idle:
                s.close()
        with httpx.Client(base_url=url, timeout=10.0) as http:
            assert http.get("/api/Status/ping").text == "pong"
        assert proc.poll() is None  # still serving
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "accept failed (Too many open files)" in err
    assert "Traceback" not in err
    assert proc.returncode == 0
