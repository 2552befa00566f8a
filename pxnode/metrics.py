"""``--metrics-port``: Prometheus text exposition of the node's stats at GET /metrics.

A tiny h11 server on loopback; each scrape asks the stats actor for a fresh
snapshot, so the scrape and ``--json`` show the same numbers.
"""

from __future__ import annotations

from typing import Any

import anyio
import h11
from anyio.abc import SocketStream

from protocols.stats import render_prometheus

MAX_REQUEST = 16 * 1024


async def serve_metrics(
    node: Any,
    port: int,
    host: str = "127.0.0.1",
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; reports the bound port through ``task_status``."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))

        async def handle(stream: SocketStream) -> None:
            async with stream:
                await _answer(node, stream)

        await listener.serve(handle)


async def _answer(node: Any, stream: SocketStream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                with anyio.fail_after(10):
                    conn.receive_data(await stream.receive(4096))
            except (anyio.EndOfStream, anyio.BrokenResourceError, TimeoutError):
                return
            except h11.RemoteProtocolError:
                return
            continue
        if isinstance(event, h11.Request):
            break
        return
    if event.method != b"GET" or event.target.split(b"?")[0] != b"/metrics":
        status, body, kind = 404, b"not found: try GET /metrics\n", b"text/plain"
    else:
        text = render_prometheus(await node.stats())
        status, body, kind = 200, text.encode(), b"text/plain; version=0.0.4; charset=utf-8"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    headers.append((b"connection", b"close"))
    data = conn.send(h11.Response(status_code=status, headers=headers))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send(data)
