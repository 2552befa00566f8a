"""The house holds: four floors with imports only going down, and exact public surfaces.

Floors, bottom to top: protocols ← actors ← supervisors ← pxnode. An actor never
imports another actor (they talk through messages only). Read from the source
text (``ast``), so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import pxnode
import pxnode.testing
import supervisors

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ("protocols", "actors", "supervisors", "pxnode")


def modules(package: str) -> Iterator[tuple[Path, str]]:
    """Every source file of ``package`` with its dotted module name."""
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module: str) -> set[str]:
    """The absolute names ``path`` imports (relative imports resolved against ``module``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
    return found


@pytest.mark.parametrize("floor", FLOORS)
def test_imports_only_go_down(floor: str) -> None:
    above = set(FLOORS[FLOORS.index(floor) + 1 :])
    wrong = [
        f"{module} imports {name}"
        for path, module in modules(floor)
        for name in imports(path, module)
        if name.split(".")[0] in above
    ]
    assert not wrong, "\n".join(wrong)


def test_no_actor_imports_another_actor() -> None:
    wrong = []
    for path, module in modules("actors"):
        own = module.split(".")[1] if "." in module else None
        for name in imports(path, module):
            parts = name.split(".")
            if parts[0] == "actors" and len(parts) > 1 and parts[1] != own:
                wrong.append(f"{module} imports {name}")
    assert not wrong, "\n".join(wrong)


def public(module: types.ModuleType) -> set[str]:
    return {
        name
        for name in dir(module)
        if not name.startswith("_") and not isinstance(getattr(module, name), types.ModuleType)
    }


def test_pxnode_exports_exactly_the_embedding_api() -> None:
    assert public(pxnode) == set(pxnode.__all__) - {"__version__"}
    assert set(pxnode.__all__) == {
        "AskTimeout", "AuthFailed", "Bar", "BarClosed", "BarSource", "BarUpdated", "BarsConfig",
        "ConfigError", "DepthsAccepted", "Escalation", "GatewayConfig", "GatewayError",
        "HealthReport", "NatsConfig", "Network", "Node", "NodeConfig", "NotReady",
        "OverflowPolicy", "PxError", "QuoteAccepted", "QuotesAccepted", "Secret", "StatsSnapshot",
        "TapeConfig", "TapePlayed", "Trade", "TradesAccepted", "UnknownSeries", "__version__",
        "load_config", "open_node",
    }  # fmt: skip


def test_pxnode_testing_exports_exactly_the_testing_kit() -> None:
    assert public(pxnode.testing) == set(pxnode.testing.__all__) == {
        "ACCOUNT", "API_KEY", "EPOCH", "ES", "HOSTS", "MNQ", "FakeAuth", "FakeContext",
        "MemoryInbox", "NatsServer", "Pipe", "RecordingRef", "ScriptedInbox", "SimNet", "SimNode",
        "Tap", "node_config", "node_tasks", "sim_node", "socket_pair", "until",
    }  # fmt: skip


def test_supervisors_exports_exactly_the_runtime_api() -> None:
    assert public(supervisors) == {
        "NO_BACKOFF", "Backoff", "BreakerPolicy", "CircuitBreaker", "BarsConfig", "NodeConfig",
        "Mailbox", "MailboxSpec", "MailboxStatistics", "OverflowPolicy", "Node", "open_node",
        "MailboxRef", "Registry", "ChildSpec", "RestartType", "Strategy", "Supervisor", "Topic",
    }  # fmt: skip
