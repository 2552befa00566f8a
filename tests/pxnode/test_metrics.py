"""--metrics-port: Prometheus text over HTTP from the node's stats, and the Grafana dashboard
in examples/ that reads it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import msgspec
import pytest

from protocols.messages import Flush, HubMessageReceived
from protocols.stats import DROP_REASONS, StatsSnapshot, render_prometheus
from pxnode.metrics import serve_metrics
from supervisors.config import NodeConfig
from supervisors.node import Node, open_node

MNQ, ES = "CON.F.US.MNQ.Z25", "CON.F.US.EP.Z25"
GRAFANA = Path(__file__).parents[2] / "examples" / "grafana" / "pxnode.json"


async def scrape(node: Node) -> str:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_metrics, node, 0)
        await anyio.sleep(0.2)  # a few ticks carry counters to stats
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            ok = await client.get("/metrics")
            missing = await client.get("/nope")
            head = await client.head("/metrics")  # once an empty reply and an error logged
            head_missing = await client.head("/nope")
        tg.cancel_scope.cancel()
    assert ok.status_code == 200 and missing.status_code == 404
    assert (head.status_code, head.content, head_missing.status_code) == (200, b"", 404)
    assert int(head.headers["content-length"]) > 0  # what a GET would get
    assert ok.headers["content-type"].startswith("text/plain; version=0.0.4")
    return ok.text


async def trade(node: Node, contract: str, price: float) -> None:
    now = node.registry.wall_time()
    stamp = datetime.fromtimestamp(now, UTC).isoformat()
    item = {"symbolId": "F.US.MNQ", "price": price, "timestamp": stamp, "type": 0, "volume": 1}
    raw = msgspec.Raw(msgspec.json.encode([contract, [item]]))
    await node.ref("validation").tell(HubMessageReceived("market", "GatewayTrade", raw, now))
    await node.ref("validation").ask(Flush(), timeout=1)


@pytest.mark.anyio
async def test_metrics_endpoint_serves_prometheus_text() -> None:
    async with open_node(NodeConfig(tick_interval=0.05)) as node:
        text = await scrape(node)
    assert "# TYPE pxnode_process_resident_memory_bytes gauge" in text


@pytest.mark.anyio
async def test_each_contract_has_its_series_with_its_symbol() -> None:
    async with open_node(NodeConfig(tick_interval=0.05, contracts=[MNQ, ES])) as node:
        await trade(node, MNQ, 21000.25)
        await trade(node, MNQ, 21000.5)
        text = await scrape(node)
    assert 'pxnode_contract_last_price{contract="CON.F.US.MNQ.Z25",symbol="MNQZ5"} 21000.5' in text
    assert 'pxnode_contract_trades_total{contract="CON.F.US.MNQ.Z25",symbol="MNQZ5"} 2' in text
    assert 'pxnode_contract_trades_total{contract="CON.F.US.EP.Z25",symbol="ESZ5"} 0' in text
    assert 'pxnode_contract_last_price{contract="CON.F.US.EP.Z25",symbol="ESZ5"} NaN' in text
    age = re.search(
        r'pxnode_contract_feed_age_seconds\{contract="CON.F.US.MNQ.Z25".*\} (\S+)', text
    )
    assert age is not None and 0 <= float(age.group(1)) < 1


@pytest.mark.trio
async def test_a_healthy_node_drops_nothing_in_stats(autojump_clock: object) -> None:
    """Mailbox samples and hub events once showed as ~40 ``invalid``/s and ``unknown``."""
    async with open_node(NodeConfig(tick_interval=0.05, contracts=[MNQ])) as node:
        await trade(node, MNQ, 21000.25)
        await anyio.sleep(5)
        stats = await node.stats()
    assert stats.dropped == {}


def test_every_drop_reason_says_why_in_the_help() -> None:
    empty = StatsSnapshot(0.0, 0.0, 0, 0.0, {}, {}, {}, {}, {}, {}, {}, {})
    text = render_prometheus(empty)
    help_ = next(line for line in text.splitlines() if "HELP pxnode_stats_dropped_total" in line)
    assert all(f"{reason}: {why}" in help_ for reason, why in DROP_REASONS.items())


def _exprs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [v for k, v in node.items() if k in ("expr", "definition") and isinstance(v, str)]
        return own + [e for value in node.values() for e in _exprs(value)]
    if isinstance(node, list):
        return [e for value in node for e in _exprs(value)]
    return []


@pytest.mark.anyio
async def test_the_grafana_dashboard_uses_only_exported_metrics() -> None:
    async with open_node(NodeConfig(tick_interval=0.05, contracts=[MNQ])) as node:
        await trade(node, MNQ, 21000.25)
        text = await scrape(node)
    exported = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.MULTILINE))
    names = {name for name, _ in exported}
    names |= {
        f"{n}_{part}" for n, kind in exported if kind == "summary" for part in ("sum", "count")
    }
    dashboard = json.loads(GRAFANA.read_text())
    exprs = _exprs(dashboard["panels"]) + _exprs(dashboard.get("templating", {}))
    assert len(exprs) >= 8
    for expr in exprs:
        used = set(re.findall(r"\bpxnode_[a-zA-Z0-9_]+", expr))
        assert used and used <= names, (expr, used - names)
    assert {"pxnode_contract_last_price", "pxnode_contract_feed_age_seconds"} <= {
        n for e in exprs for n in re.findall(r"\bpxnode_[a-zA-Z0-9_]+", e)
    }
