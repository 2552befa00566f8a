"""--metrics-port: Prometheus text over HTTP from the node's stats."""

from __future__ import annotations

import anyio
import httpx
import pytest

from pxnode.metrics import serve_metrics
from supervisors.config import NodeConfig
from supervisors.node import open_node


@pytest.mark.anyio
async def test_metrics_endpoint_serves_prometheus_text() -> None:
    async with open_node(NodeConfig(tick_interval=0.05)) as node, anyio.create_task_group() as tg:
        port = await tg.start(serve_metrics, node, 0)
        await anyio.sleep(0.2)  # a few ticks carry counters to stats
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            ok = await client.get("/metrics")
            missing = await client.get("/nope")
        tg.cancel_scope.cancel()
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE pxnode_process_resident_memory_bytes gauge" in ok.text
    assert missing.status_code == 404
