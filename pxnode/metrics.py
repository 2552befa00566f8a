"""``--metrics-port``: Prometheus text exposition of the node's stats at GET /metrics.

A tiny h11 server on loopback; each scrape asks the stats actor for a fresh
snapshot, so the scrape and ``--json`` show the same numbers.

A scraper is not trusted to behave: a request that is not HTTP gets a 400, a
client that resets mid-answer (a scrape timeout), says nothing for
``REQUEST_TIMEOUT`` or does not read its answer for as long is dropped, and
every such connection is counted in ``counters``. ``pxnode.listen.serve``
keeps any failure of one connection inside it, and a failure of the endpoint
itself is logged and ends only the endpoint: it never shares the fate of the
node that runs it.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import anyio
import h11
from anyio.abc import ByteSendStream, SocketStream
from anyio.streams.stapled import MultiListener

from protocols.errors import PxError
from protocols.messages import ContractSummary, GetContracts
from protocols.stats import ContractMetrics, render_prometheus
from pxnode.listen import bind, local_port, serve
from pxnode.sim import contract_symbol
from pxnode.snapshot import ASK_TIMEOUT

log = logging.getLogger(__name__)

MAX_REQUEST = 16 * 1024
REQUEST_TIMEOUT = 10.0
"""Seconds a client has to send its whole request, and then to take its answer."""


async def metrics_listener(port: int, host: str = "127.0.0.1") -> MultiListener[SocketStream]:
    """The endpoint's socket, bound before the node starts (``ConfigError`` if it cannot be)."""
    return await bind(host, port, "--metrics-port")


async def serve_metrics(
    node: Any,
    port: int | MultiListener[SocketStream],
    host: str = "127.0.0.1",
    *,
    counters: Counter[str] | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled on ``port`` (or an already bound listener); reports the port
    through ``task_status``."""
    counters = counters if counters is not None else Counter()
    listener = await metrics_listener(port, host) if isinstance(port, int) else port
    async with listener:
        task_status.started(local_port(listener))

        async def handle(stream: SocketStream) -> None:
            try:
                await _answer(node, stream, counters)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                counters["clients_gone"] += 1

        try:
            await serve(listener, handle, counters)
        except Exception as error:  # the endpoint is a guest of the node: it never ends the node
            counters["endpoint_failures"] += 1
            log.error("metrics endpoint stopped: %r", error)


async def _answer(node: Any, stream: SocketStream, counters: Counter[str]) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
    try:
        with anyio.move_on_after(REQUEST_TIMEOUT) as waiting:
            event = await _request(conn, stream)
    except h11.RemoteProtocolError:
        counters["requests_malformed"] += 1
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await _send(
                conn, stream, counters, 400, b"bad request: try GET /metrics\n", b"text/plain"
            )
        return
    if waiting.cancelled_caught:
        counters["request_timeouts"] += 1
        return
    if event is None:
        return  # closed before a whole request
    head = event.method == b"HEAD"  # the headers a GET would get, no body (h11 sends none)
    if event.method not in (b"GET", b"HEAD") or event.target.split(b"?")[0] != b"/metrics":
        await _send(
            conn, stream, counters, 404, b"not found: try GET /metrics\n", b"text/plain", head
        )
        return
    try:
        text = render_prometheus(await node.stats(), await contract_metrics(node))
    except PxError as error:  # the stats actor is restarting, or the node stops
        body = f"stats unavailable: {error}\n".encode()
        await _send(conn, stream, counters, 503, body, b"text/plain", head)
        return
    kind = b"text/plain; version=0.0.4; charset=utf-8"
    await _send(conn, stream, counters, 200, text.encode(), kind, head)


async def contract_metrics(node: Any) -> list[ContractMetrics]:
    """Each known contract's last price, feed age and trades (configured ones even before
    their first trade); a node without a health actor (a tape) has no feed ages."""
    summaries: dict[str, ContractSummary] = await node.ref("validation").ask(
        GetContracts(), timeout=ASK_TIMEOUT
    )
    try:
        ages = {c: h.last_event_age for c, h in (await node.health()).contracts.items()}
    except (PxError, KeyError):  # KeyError: no health actor
        ages = {}
    known = dict.fromkeys([*node.config.contracts, *summaries, *ages])
    return [
        ContractMetrics(
            contract,
            contract_symbol(contract),
            summary.last_price if summary else None,
            ages.get(contract),
            summary.trades if summary else 0,
        )
        for contract in known
        for summary in [summaries.get(contract)]
    ]


async def _request(conn: h11.Connection, stream: SocketStream) -> h11.Request | None:
    """The request line and headers; None if the peer closed first.

    Raises ``h11.RemoteProtocolError`` if the bytes are not an HTTP request."""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            return event
        if event is not h11.NEED_DATA:
            return None  # the peer closed before a request
        try:
            data = await stream.receive(4096)
        except anyio.EndOfStream:
            data = b""  # h11 reads b"" as the peer's EOF
        conn.receive_data(data)


async def _send(
    conn: h11.Connection,
    stream: ByteSendStream,
    counters: Counter[str],
    status: int,
    body: bytes,
    kind: bytes,
    head: bool = False,
) -> None:
    headers = [
        (b"content-type", kind),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    data = conn.send(h11.Response(status_code=status, headers=headers))
    if not head:  # a HEAD answer has no body: h11 refuses one
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    with anyio.move_on_after(REQUEST_TIMEOUT) as sending:  # a scraper that never reads
        await stream.send(data)
    if sending.cancelled_caught:
        counters["answer_timeouts"] += 1
