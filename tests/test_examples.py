"""The runnable examples in examples/ keep working (the pytest one is collected directly)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest

from actors.nats_bridge import NatsConfig
from supervisors.config import NodeConfig, TapeConfig, load_config
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


def _struct_paths(struct: Any, prefix: str = "") -> set[str]:
    """Every field of a config Struct tree as dotted paths (sections and their keys)."""
    paths: set[str] = set()
    for field in msgspec.structs.fields(struct):
        path = f"{prefix}{field.name}"
        paths.add(path)
        inner = [t for t in (field.type, *get_args(field.type)) if isinstance(t, type)]
        for kind in inner:
            if issubclass(kind, msgspec.Struct):
                paths |= _struct_paths(kind, f"{path}.")
    return paths


def _toml_paths(data: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in data.items():
        paths.add(f"{prefix}{key}")
        if isinstance(value, dict):
            paths |= _toml_paths(value, f"{prefix}{key}.")
    return paths


def _uncommented(text: str) -> str:
    """The sample with its `# key = value` and `# [section]` lines switched on."""
    setting = re.compile(r"^# (\[[\w.]+\]|\w+ = .*)$")
    return "\n".join(
        match.group(1) if (match := setting.match(line)) else line for line in text.splitlines()
    )


def test_sample_config_loads_and_lists_every_field() -> None:
    sample = EXAMPLES / "pxnode.toml"
    config = load_config(sample, environ={})
    assert config.contracts == ["MNQ", "CON.F.US.EP.Z25"]
    assert config.gateway is not None and config.gateway.accounts == []  # every active one
    # Everything else it says is the default: the file documents, it does not tune.
    assert config.bars == NodeConfig().bars and config.health == NodeConfig().health
    assert config.validation == NodeConfig().validation and config.stats == NodeConfig().stats

    every = msgspec.toml.decode(_uncommented(sample.read_text()))
    listed = _toml_paths(every)
    # RateLimit's two numbers are given inline, as `history = { requests = ..., period = ... }`.
    assert _struct_paths(NodeConfig) - listed == set()
    assert listed - _struct_paths(NodeConfig) == set()
    # The commented-out sections are valid as they stand once switched on.
    assert msgspec.convert(every["nats"], NatsConfig) == NatsConfig()
    assert msgspec.convert(every["consume"], NatsConfig) == NatsConfig()
    assert msgspec.convert(every["tape"], TapeConfig) == TapeConfig("yesterday.tape", 1.0)
    on = {k: v for k, v in every.items() if k not in ("consume", "gateway", "tape")}
    assert msgspec.convert(on, NodeConfig).nats == NatsConfig()


def test_readme_sets_users_and_developers_up_apart() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    use = readme.split("## Use it", 1)[1].split("\n## ", 1)[0]
    develop = readme.split("## Develop it", 1)[1].split("\n## ", 1)[0]
    assert ".venv/bin/pip install . && .venv/bin/pxnode demo" in use and "[dev]" not in use
    assert "pip install -e '.[dev]'" in develop
    # CI runs exactly the README's test command.
    command = ".venv/bin/python -m pytest -q"
    assert command in develop
    assert command in (EXAMPLES.parent / ".ci" / "run").read_text().splitlines()
