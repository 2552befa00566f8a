"""The public surface is exactly the intended one (nothing private leaks out)."""

from __future__ import annotations

import types

import supervisors


def test_supervisors_exports_exactly_the_runtime_api() -> None:
    public = {
        name
        for name in dir(supervisors)
        if not name.startswith("_") and not isinstance(getattr(supervisors, name), types.ModuleType)
    }
    assert public == {
        "NO_BACKOFF", "Backoff", "BreakerPolicy", "CircuitBreaker", "BarsConfig", "NodeConfig",
        "Mailbox", "MailboxSpec", "MailboxStatistics", "OverflowPolicy", "Node", "open_node",
        "MailboxRef", "Registry", "ChildSpec", "RestartType", "Strategy", "Supervisor", "Topic",
    }  # fmt: skip
