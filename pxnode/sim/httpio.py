"""h11 over an anyio byte stream: read the next event, write one whole response."""

from __future__ import annotations

import http
from collections import Counter
from typing import Any

import anyio
import anyio.abc
import h11

from pxnode.sim.rest import Reply


async def next_event(
    conn: h11.Connection, stream: anyio.abc.ByteStream, counters: Counter[str]
) -> Any:
    """The next h11 event; a malformed request gets a 400 and ends the connection (``None``)."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            counters["http_malformed"] += 1
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await respond(stream, conn, (400, [(b"connection", b"close")], b""))
            return None
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            data = b""  # h11 reads b"" as the peer's EOF
        conn.receive_data(data)


async def respond(stream: anyio.abc.ByteStream, conn: h11.Connection, reply: Reply) -> None:
    status, headers, body = reply
    response = h11.Response(
        status_code=status,
        reason=http.HTTPStatus(status).phrase.encode(),
        headers=[*headers, (b"content-length", b"%d" % len(body)), (b"server", b"pxnode-sim")],
    )
    data = conn.send(response) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send(data)
