"""The README's promise through the real entry point: one line ``pxnode: error: ...``, exit 2.

Every case here printed a traceback (or died) before issue 12.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
from typer.testing import CliRunner

from pxnode.cli import app
from tests.subprocess_env import PXNODE, strict_env

runner = CliRunner()


def one_line_error(args: list[str], message: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pxnode: error: "), result.stderr
    assert message in lines[0]
    return lines[0]


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


# ------------------------------------------------------------------------ recording


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    """One ``pxnode gateway`` for the recording tests (a slow market: 20 trades/s)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from pxnode.cli import main; main()", "gateway", "--rate", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=strict_env(),
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().split()[-3]
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def record_args(url: str, tape: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-c", "from pxnode.cli import main; main()", "record", tape,
        "--contracts", "CON.F.US.MNQ.Z25", "--json", "--api-url", url,
        "--market-hub", f"{url}/hubs/market", "--user-hub", f"{url}/hubs/user", *extra,
    ]  # fmt: skip


CREDENTIALS = {"PROJECT_X_USERNAME": "demo", "PROJECT_X_API_KEY": "demo-api-key"}


@pytest.mark.slow
def test_kill_9_keeps_the_recorded_lines(gateway_url: str, tmp_path: Path) -> None:
    tape = tmp_path / "t.jsonl"
    proc = subprocess.Popen(
        record_args(gateway_url, str(tape)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=strict_env(**CREDENTIALS),
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # the node is up: a first snapshot
    time.sleep(3)
    proc.kill()  # SIGKILL: no shutdown, no final flush
    proc.communicate(timeout=20)
    from actors.tape import TapeCounts, read_tape

    counts = TapeCounts()
    lines = [line for chunk in read_tape(tape, counts) for line in chunk]
    assert any(line.target == "GatewayTrade" for line in lines)
    assert counts.malformed <= 1  # at most the last line, cut by the kill


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tape", "message"),
    [
        ("/dev/full", "pxnode: error: cannot write tape '/dev/full': No space left on device"),
        (
            "/no/such/dir/t.jsonl",
            "pxnode: error: cannot write tape '/no/such/dir/t.jsonl': its directory does not exist",
        ),
    ],
)
def test_an_unwritable_tape_is_one_line_and_exit_2(
    gateway_url: str, tape: str, message: str
) -> None:
    done = subprocess.run(
        record_args(gateway_url, tape, "--duration", "5"),
        capture_output=True,
        text=True,
        timeout=60,
        env=strict_env(**CREDENTIALS),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [message]


def test_replay_of_volumes_summing_past_int64_writes_saturated_bars(tmp_path: Path) -> None:
    tape = tmp_path / "big.tape"
    items = [
        {"symbolId": "F.US.MNQ", "price": 100.0, "timestamp": f"2025-01-06T15:00:1{k}Z",
         "type": 0, "volume": 2**62}
        for k in range(3)
    ]  # fmt: skip
    line = {"t": 1736175615.0, "hub": "market", "target": "GatewayTrade",
            "arguments": ["CON.F.US.MNQ.Z25", items]}  # fmt: skip
    tape.write_text(json.dumps(line) + "\n")
    out = tmp_path / "bars.csv"
    result = runner.invoke(app, ["replay", str(tape), "--timeframes", "1min", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert pl.read_csv(out)["volume"].to_list() == [2**63 - 1]


# ---------------------------------------------------------------------- deep nesting


def test_a_tape_line_nested_1000_deep_is_malformed_and_the_replay_goes_on(tmp_path: Path) -> None:
    tape = tmp_path / "deep.tape"
    trade = {"symbolId": "F.US.MNQ", "price": 100.0, "timestamp": "2025-01-06T15:00:10Z",
             "type": 0, "volume": 1}  # fmt: skip
    good = {"t": 1736175615.0, "hub": "market", "target": "GatewayTrade",
            "arguments": ["CON.F.US.MNQ.Z25", [trade]]}  # fmt: skip
    nested = "[" * 1000 + "]" * 1000
    deep = [
        f'{{"t":1736175615.0,"hub":"market","target":"GatewayTrade","arguments":{nested}}}',
        f'{{"t":1736175615.0,"hub":"market","target":"GatewayTrade","arguments":["C",{nested}]}}',
        f'{{"t":1736175615.0,"hub":"market","x":{"[" * 5000 + "]" * 5000}}}',
    ]
    tape.write_text("\n".join([*deep, json.dumps(good)]) + "\n")
    out = tmp_path / "bars.csv"
    result = runner.invoke(
        app, ["replay", str(tape), "--timeframes", "1min", "--out", str(out), "--json-stats"]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert (stats["lines"], stats["malformed"], stats["trades_accepted"]) == (4, 3, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "is nested too deeply"),
        ("x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n", "is nested too deeply"),
        ("gateway = 5\n", "Expected `object | null`, got `int` - at `$.gateway`"),
        ("[gateway]\napi_key = 123456\n", "expected a string, got int - at `$.gateway.api_key`"),
    ],
    ids=["arrays-5000", "tables-5000", "gateway-int", "api-key-int"],
)
@pytest.mark.parametrize("api_url_env", [False, True], ids=["no-env", "PROJECT_X_API_URL"])
def test_bad_config_files_are_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    message: str,
    api_url_env: bool,
) -> None:
    monkeypatch.setenv("PROJECT_X_USERNAME", "demo")
    monkeypatch.setenv("PROJECT_X_API_KEY", "demo-api-key")
    if api_url_env:  # the environment is merged into [gateway]: it must not trip on its shape
        monkeypatch.setenv("PROJECT_X_API_URL", "http://127.0.0.1:1")
    else:
        monkeypatch.delenv("PROJECT_X_API_URL", raising=False)
    config = tmp_path / "pxnode.toml"
    config.write_text(text)
    line = one_line_error(["run", "--config", str(config), "--contracts", "MNQ"], message)
    assert "123456" not in line  # a key is never echoed


@pytest.mark.slow
def test_a_demo_faster_than_the_process_can_go_still_stops_at_its_duration() -> None:
    """Found by the command-line fuzz: at --rate 70000 the sim emitted its whole backlog in
    one step, each step longer than the last, and the demo never came back (nor on SIGTERM
    for a minute)."""
    done = subprocess.run(
        [*PXNODE, "demo", "--duration", "0", "--rate", "70000"],
        capture_output=True,
        text=True,
        timeout=90,
        env=strict_env(),
    )
    assert done.returncode == 0, done.stderr
