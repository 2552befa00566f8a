"""What the command line says about itself: --version, help texts, completion."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pxnode.cli import app
from tests.subprocess_env import strict_env

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_version_through_the_installed_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pxnode", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        env=strict_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"pxnode {version('pxnode')}\n"


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)])
def test_help_reads_as_written(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "<bool>" not in text  # a flag takes no value, so none is shown
    assert "{" not in text and "``" not in text  # no {tape}, no literal ``run``
    assert "<list[str]>" not in text


def test_usage_names_the_tape_in_capitals() -> None:
    for command in ("record", "replay"):
        result = runner.invoke(app, [command, "--help"], terminal_width=100)
        assert "TAPE" in result.output.splitlines()[1], result.output


def test_flags_are_flags() -> None:
    # `--json true` is an extra argument, not a value: the help no longer suggests one.
    result = runner.invoke(app, ["consume", "--nats", "nats://x", "--json", "true"])
    assert result.exit_code == 2 and "unexpected extra argument" in result.output


def test_shell_completion_completes_commands() -> None:
    env = strict_env(_PXNODE_COMPLETE="complete_bash", COMP_WORDS="pxnode re", COMP_CWORD="1")
    script = Path(sys.executable).with_name("pxnode")  # the installed entry point
    done = subprocess.run([script], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["replay", "record"]
