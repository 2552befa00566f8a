"""The ``pxnode`` command line through its real entry point."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import psutil
import pytest
from rich.console import Console
from typer.testing import CliRunner

from pxnode.cli import app
from pxnode.cli._tape import _progress
from tests.subprocess_env import gateway, strict_env

runner = CliRunner()

TRADES = [
    ("2025-01-06T15:00:10+00:00", 100.0, 1),
    ("2025-01-06T15:00:50+00:00", 101.0, 2),
    ("2025-01-06T15:01:05+00:00", 99.0, 3),
]


def write_tape(path: Path) -> None:
    items = [
        {"symbolId": "F.US.MNQ", "price": p, "timestamp": ts, "type": 0, "volume": v}
        for ts, p, v in TRADES
    ]
    lines: list[Any] = [
        {"t": 1736175670.0, "hub": "market", "target": "GatewayTrade",
         "arguments": ["CON.F.US.MNQ.Z25", items]},
        "this line is not json",
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("replay", "gateway"):
        assert command in result.output


def test_replay_writes_bars_and_json_stats(tmp_path: Path) -> None:
    tape = tmp_path / "t.tape"
    write_tape(tape)
    out = tmp_path / "bars.csv"
    result = runner.invoke(
        app, ["replay", str(tape), "--timeframes", "1min", "--out", str(out), "--json-stats"]
    )
    assert result.exit_code == 0, result.output
    stats = msgspec.json.decode(result.stdout.strip().splitlines()[-1])
    assert stats["lines"] == 2 and stats["malformed"] == 1 and stats["trades_accepted"] == 3
    frame = pl.read_csv(out)
    assert frame["close"].to_list() == [101.0, 99.0]
    assert frame["volume"].to_list() == [3, 3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "/no/such/tape", "--out", "x.csv"], "cannot open tape"),
        (["replay", "TAPE", "--out", "x.csv", "--timeframes", "7min"], "invalid timeframe '7min'"),
        (["replay", "TAPE", "--out", "x.csv", "--timeframes", ","], "at least one timeframe"),
        (["replay", "TAPE", "--out", "x.json"], "--out must end in .parquet or .csv"),
        (["replay", "TAPE", "--out", "x" * 300 + ".csv"], "File name too long"),
        (["chart", "TAPE", "--timeframe", "1min", "--out", "x" * 300 + ".html"], "too long"),
        (["gateway", "--rate", "-1"], "rate must be in"),
        (["replay", "TAPE", "--out", "x.csv", "--log-level", "loud"], "unknown log level"),
    ],
)
def test_bad_arguments_fail_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    tape = tmp_path / "t.tape"
    write_tape(tape)
    args = [str(tape) if a == "TAPE" else a for a in args]
    args = [str(tmp_path / a) if a.startswith("x.") else a for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_gateway_stops_cleanly_on_sigterm_and_sigint() -> None:
    for signum, code in ((signal.SIGTERM, 0), (signal.SIGINT, 130)):
        proc = subprocess.Popen(
            [sys.executable, "-c", "from pxnode.cli import main; main()", "gateway"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=strict_env(),
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        time.sleep(0.2)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == code, err
        assert "Traceback" not in err


def pxnode(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    return subprocess.run(
        [sys.executable, "-c", "from pxnode.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=strict_env(**(env or {})),
    )


@pytest.mark.slow
def test_demo_json_streams_snapshots_with_bars_for_several_contracts() -> None:
    done = pxnode("demo", "--duration", "5", "--json", "--timeframes", "1sec,1min", "--rate", "400")
    assert done.returncode == 0, done.stderr
    lines = [msgspec.json.decode(line) for line in done.stdout.splitlines()]
    assert 4 <= len(lines) <= 7
    last = lines[-1]
    assert last["bars_closed"] > 0
    assert sum(1 for c in last["contracts"].values() if c["trades"] > 0) >= 2
    assert last["breaker"] == {"market": "closed", "user": "closed"} and last["healthy"]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_demo_without_a_tty_prints_plain_lines() -> None:
    # MNQ three ways is one contract (resolved, then made unique: the sim once failed on it)
    done = pxnode("demo", "--duration", "2.5", "--contracts", "MNQ,ES,mnq,CON.F.US.MNQ.Z25")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "\x1b[" not in done.stdout


@pytest.mark.slow
def test_record_then_replay_round_trip(tmp_path: Path) -> None:
    with gateway("--rate", "500") as url:
        env = {"PROJECT_X_USERNAME": "demo", "PROJECT_X_API_KEY": "demo-api-key"}
        tape = tmp_path / "session.tape"
        done = pxnode(
            "record", str(tape), "--contracts", "MNQ,CON.F.US.EP.Z25", "--duration", "3",
            "--json", "--api-url", url, "--market-hub", f"{url}/hubs/market",
            "--user-hub", f"{url}/hubs/user", env=env,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = tape.read_text()
    assert "GatewayTrade" in text and "demo-api-key" not in text
    out = tmp_path / "bars.parquet"
    replayed = pxnode("replay", str(tape), "--timeframes", "1sec", "--out", str(out),
                      "--json-stats")  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    stats = msgspec.json.decode(replayed.stdout.strip().splitlines()[-1])
    assert stats["trades_accepted"] > 100 and stats["malformed"] == 0
    assert set(pl.read_parquet(out)["contract"]) == {"CON.F.US.MNQ.Z25", "CON.F.US.EP.Z25"}


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "--contracts", "MNQ"], {}, "no username (set PROJECT_X_USERNAME)"),
        (["run"], {"PROJECT_X_USERNAME": "u", "PROJECT_X_API_KEY": "k"}, "no contracts"),
        (
            ["run", "--contracts", "MNQ", "--api-url", "http://127.0.0.1:1"],
            {"PROJECT_X_USERNAME": "u", "PROJECT_X_API_KEY": "k"},
            "gateway unreachable at http://127.0.0.1:1",
        ),
        (["run", "--contracts", "MNQ", "--config", "/no/such.toml"], {}, "cannot read config"),
        (["demo", "--contracts", "XYZ"], {}, "unknown contract 'XYZ'"),
        (["demo", "--timeframes", "2day"], {}, "invalid timeframe"),
        (["demo", "--faults", "explode@3"], {}, "explode"),
    ],
)
def test_live_commands_fail_with_one_line(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], message: str
) -> None:
    for name in ("PROJECT_X_USERNAME", "PROJECT_X_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "k" not in result.stderr.split() and "Traceback" not in result.output


@pytest.mark.slow
def test_demo_stops_cleanly_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from pxnode.cli import main; main()", "demo", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=strict_env(),
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the node is up and printing snapshots
    assert first.startswith("{")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err


@pytest.mark.slow
def test_replay_stopped_by_a_signal_writes_nothing_and_says_so(tmp_path: Path) -> None:
    """Abandoned, a replay leaves no partial output, and its exit code says it did not
    finish: SIGTERM exited 0 with no file, and a pipeline took stale bars for done."""
    tape = tmp_path / "big.tape"
    subprocess.run(
        [sys.executable, "bench/gen_tape.py", "--trades", "1000000", str(tape)],
        check=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    out = tmp_path / "bars.parquet"
    for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        proc = subprocess.Popen(
            [sys.executable, "-c", "from pxnode.cli import main; main()", "replay", str(tape),
             "--timeframes", "1sec", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=strict_env(),
        )  # fmt: skip
        # Under way once the tape is open (imports alone take over a second on a loaded
        # machine, and a signal during them is Python's KeyboardInterrupt, not pxnode's).
        child, deadline = psutil.Process(proc.pid), time.monotonic() + 30
        while str(tape) not in {f.path for f in child.open_files()} and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == code, err
        assert "Traceback" not in err
        assert not out.exists()  # abandoned: no partial output


def test_replay_of_a_window_of_a_tape_counts_what_it_filtered(tmp_path: Path) -> None:
    tape = tmp_path / "t.tape"
    write_tape(tape)
    out = tmp_path / "bars.csv"
    result = runner.invoke(
        app,
        ["replay", str(tape), "--out", str(out), "--json-stats", "--contracts", "CON.F.US.MNQ.Z25",
         "--since", "2025-01-06T15:00:30Z", "--until", "2025-01-06T09:01:00-06:00"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stats = msgspec.json.decode(result.stdout.strip().splitlines()[-1])
    assert stats["trades_accepted"] == 1 and stats["lines_filtered"] == 0
    assert stats["trades_filtered"] == {"before_since": 1, "after_until": 1, "contract": 0}
    assert pl.read_csv(out)["volume"].to_list() == [2]
    assert result.stderr == ""  # no progress bar: not a terminal (and --json-stats)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since/--until: Invalid isoformat string: 'yesterday'"),
        (["--until", "2025-13-01"], "--since/--until:"),
        (["--since", "2025-01-06T15:00:00Z", "--until", "2025-01-06T14:00:00Z"],
         "--until must be after --since"),
        (["--contracts", "CON.F.US.NOPE"], "unknown contract 'CON.F.US.NOPE'"),
        (["--contracts", ","], "--contracts needs at least one contract id"),
        (["--since", "0001-01-01T00:00:00+01:00"], "--since/--until: date value out of range"),
        (["--until", "9999-12-31T23:59:59-05:00"], "--since/--until: date value out of range"),
    ],
)  # fmt: skip
def test_bad_replay_windows_fail_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    tape, out = tmp_path / "t.tape", tmp_path / "bars.csv"
    write_tape(tape)
    result = runner.invoke(app, ["replay", str(tape), "--out", str(out), *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"pxnode: error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.anyio
async def test_the_progress_bar_is_drawn_on_a_terminal_only(tmp_path: Path) -> None:
    tape = tmp_path / "t.tape"
    write_tape(tape)
    size = tape.stat().st_size
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100)
    async with _progress(tape, show=True, console=terminal) as counts:
        counts.bytes_read, counts.lines = size, 2
    assert "replay" in screen.getvalue() and "100%" in screen.getvalue()
    for tty, show in ((False, True), (True, False)):
        quiet = io.StringIO()
        console = Console(file=quiet, force_terminal=tty)
        async with _progress(tape, show=show, console=console):
            pass
        assert quiet.getvalue() == ""


def test_nats_on_the_command_line_keeps_the_config_files_nats_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--nats URL`` rebuilt the settings from url, stream and durable: the file's
    overflow, buffer, window and windows silently became the defaults."""
    from pxnode.cli._live import _live_config

    monkeypatch.setenv("PROJECT_X_USERNAME", "demo")
    monkeypatch.setenv("PROJECT_X_API_KEY", "demo-api-key")
    path = tmp_path / "pxnode.toml"
    path.write_text(
        'contracts = ["CON.F.US.MNQ.Z25"]\n[nats]\nurl = "nats://10.0.0.1:4222"\n'
        'overflow = "drop_oldest"\nbuffer = 1024\nwindow = 100\nduplicate_window = 600.0\n'
    )
    config = _live_config(path, None, None, None, None, None, None, "nats://127.0.0.1:4222")
    assert config.nats is not None
    nats = config.nats
    assert nats.url == "nats://127.0.0.1:4222"
    assert (nats.overflow, nats.buffer, nats.window, nats.duplicate_window) == (
        "drop_oldest",
        1024,
        100,
        600.0,
    )


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path: Path) -> None:
    """A tape in a missing directory was found once the node ran (a dashboard line, then
    the error); a replay's --out naming its own tape overwrote the recording."""
    tape = tmp_path / "nowhere" / "t.tape"
    credentials = {"PROJECT_X_USERNAME": "demo", "PROJECT_X_API_KEY": "demo-api-key"}
    record = runner.invoke(
        app, ["record", str(tape), "--contracts", "CON.F.US.MNQ.Z25"], env=credentials
    )
    assert record.exit_code == 2 and record.stdout == ""
    assert f"pxnode: error: cannot write tape {str(tape)!r}" in record.stderr
    recorded = tmp_path / "t.csv"
    write_tape(recorded)
    before = recorded.read_bytes()
    replay = runner.invoke(app, ["replay", str(recorded), "--out", str(recorded)])
    assert replay.exit_code == 2 and "is the tape itself" in replay.stderr
    assert recorded.read_bytes() == before
