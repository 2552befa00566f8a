"""The node's table: start order, and what each row builds from the config."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from supervisors import children
from supervisors.children import NODE_CHILDREN
from supervisors.config import BarsConfig, NodeConfig


def test_every_sink_starts_before_what_feeds_it_and_stops_after() -> None:
    """The ordered shutdown (reverse start order) stops sources first, so every sink
    still drains what its sources passed on before they stopped."""
    order = [row.name for row in NODE_CHILDREN]
    feeds = {
        "validation": ("stats", "health", "account", "bars", "nats_bridge"),
        "connection_market": ("validation", "recorder", "history", "auth"),
        "connection_user": ("validation", "recorder", "auth"),
        "nats_source": ("validation",),
        "history": ("bars", "auth"),
        "clock": ("bars", "validation", "stats", "health", "account"),
    }
    for source, sinks in feeds.items():
        for sink in sinks:
            assert order.index(sink) < order.index(source), f"{sink} must start before {source}"


def test_ring_size_follows_memory_but_never_below_exactness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = NodeConfig(contracts=["A"] * 10, bars=BarsConfig(timeframes=["1sec", "1min"]))
    monkeypatch.setattr(
        "supervisors.children.psutil.virtual_memory", lambda: SimpleNamespace(available=24 << 30)
    )
    assert children._ring_size(config) == 1000  # plenty of memory: the configured cap
    monkeypatch.setattr(
        "supervisors.children.psutil.virtual_memory", lambda: SimpleNamespace(available=0)
    )
    assert children._ring_size(config) == 62  # 60 s of 1sec bars + 2: late trades stay exact
