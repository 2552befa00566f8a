"""Listening sockets that no connection can take down: the sim's and the metrics endpoint's.

anyio's ``Listener.serve`` ends (and takes its task group with it) when one
handler raises or when ``accept`` fails, and ``accept`` fails whenever the
process is out of file descriptors (EMFILE): 200 idle clients under
``ulimit -n 128`` would stop the server for good. ``serve`` here follows what
``trio.serve_listeners`` does on trio alone, on both backends: an accept error
is counted and waited out (100 ms, doubling to 1 s, while it lasts), and a
handler error is counted, logged and ends only its own connection.

``bind`` turns the ways a listening socket cannot be made (address in use, a
host that does not resolve, a port out of range) into one ``ConfigError``
line for the command line.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
import anyio.abc
from anyio.abc import SocketListener, SocketStream
from anyio.streams.stapled import MultiListener

from protocols.errors import ConfigError

log = logging.getLogger(__name__)

ACCEPT_PAUSE: Final = 0.1
"""First wait after a failed accept (trio's serve_listeners waits this long too)."""
MAX_ACCEPT_PAUSE: Final = 1.0

Handler = Callable[[SocketStream], Awaitable[None]]


async def bind(host: str, port: int, what: str) -> MultiListener[SocketStream]:
    """A TCP listener on ``host``:``port``; ``ConfigError`` naming ``what`` if there can be none."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what}: port must be 0..65535, got {port}")
    try:
        return await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"{what}: cannot listen on {host}:{port}: {reason}") from None


def local_port(listener: MultiListener[SocketStream]) -> int:
    port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
    return port


async def serve(
    listener: MultiListener[SocketStream],
    handler: Handler,
    counters: Counter[str],
) -> None:
    """Accept connections until cancelled, each served by ``handler`` in its own task.

    ``counters``: ``accept_errors`` (accepts that failed and were waited out),
    ``handler_errors`` (connections whose handler raised; the connection is closed).
    """
    sockets = [one for one in listener.listeners if isinstance(one, SocketListener)]
    async with anyio.create_task_group() as tg:
        for one in sockets:  # one per address the host resolved to
            tg.start_soon(_accept_loop, one, handler, counters, tg)


async def _accept_loop(
    listener: SocketListener,
    handler: Handler,
    counters: Counter[str],
    tg: anyio.abc.TaskGroup,
) -> None:
    pause = ACCEPT_PAUSE
    while True:
        try:
            stream = await listener.accept()
        except (OSError, anyio.BrokenResourceError) as error:  # trio's anyio wraps the OSError
            counters["accept_errors"] += 1
            cause = error if isinstance(error, OSError) else error.__cause__
            reason = getattr(cause, "strerror", None) or repr(cause)
            log.warning("accept failed (%s); pausing %.1f s", reason, pause)
            await anyio.sleep(pause)
            pause = min(pause * 2, MAX_ACCEPT_PAUSE)
            continue
        pause = ACCEPT_PAUSE
        tg.start_soon(_guarded, handler, stream, counters)


async def _guarded(handler: Handler, stream: SocketStream, counters: Counter[str]) -> None:
    try:
        async with stream:
            await handler(stream)
    except Exception as error:
        counters["handler_errors"] += 1
        # The traceback only at debug level: the promise is one line, never a traceback.
        debug = log.isEnabledFor(logging.DEBUG)
        log.error("connection handler failed, connection closed: %r", error, exc_info=debug)
