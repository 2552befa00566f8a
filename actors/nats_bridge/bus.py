"""Opening NATS and the stream: the one place nats-py is imported.

nats-py runs on asyncio only. A node that publishes or consumes the stream runs
on asyncio (the CLI picks it for ``--nats``); ``open_node`` refuses trio with a
``ConfigError`` up front (``require_asyncio``) instead of failing inside an actor.

A dropped server is not hidden by nats-py's own reconnect loop (``allow_reconnect``
is off): the actor fails, its supervisor restarts it with backoff and the
circuit breaker, as it does for a gateway hub, so an outage is visible in the
node's events and statistics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import sniffio

from protocols.errors import ConfigError, PxError

from .config import NatsConfig

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext


class NatsUnavailable(PxError):
    """NATS could not be reached, or the connection was lost (the supervisor retries)."""


class DurableInUse(PxError):
    """Another process consumes through the same durable (restarts cannot help)."""


def require_asyncio() -> None:
    """``ConfigError`` unless running on asyncio (nats-py's only event loop)."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = "none"
    if library != "asyncio":
        raise ConfigError(
            f"NATS (nats-py) runs on asyncio only, this node runs on {library}: "
            'use anyio.run(..., backend="asyncio") (the CLI does so for --nats)'
        )


def _import_nats() -> Any:
    try:
        import nats
    except ImportError:
        raise ConfigError("NATS needs nats-py: pip install 'pxnode[nats]'") from None
    return nats


@asynccontextmanager
async def connected(
    config: NatsConfig,
) -> AsyncIterator[tuple[Client, JetStreamContext, anyio.Event]]:
    """A connection, its JetStream context and an event set when the connection is
    lost; ``NatsUnavailable`` if the server cannot be reached."""
    require_asyncio()
    nats = _import_nats()
    lost = anyio.Event()

    async def closed() -> None:
        lost.set()

    try:
        with anyio.fail_after(config.connect_timeout):
            client = await nats.connect(
                config.url,
                allow_reconnect=False,
                connect_timeout=config.connect_timeout,
                max_reconnect_attempts=0,
                error_cb=_ignore,
                disconnected_cb=closed,
                closed_cb=closed,
            )
    except (OSError, TimeoutError, nats.errors.Error) as error:
        why = str(error) or type(error).__name__
        raise NatsUnavailable(f"cannot reach NATS at {config.url}: {why}") from None
    try:
        yield client, client.jetstream(), lost
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
            await client.close()


async def until_lost(lost: anyio.Event, url: str) -> None:
    """Fail the actor once ``connected``'s ``lost`` is set: a dropped server is a
    supervised failure even while nothing is being published or fetched."""
    await lost.wait()
    raise NatsUnavailable(f"connection to NATS at {url} lost")


async def _ignore(error: Exception) -> None:
    """nats-py reports connection errors here too; the failing call raises them to us."""


async def ensure_stream(js: JetStreamContext, config: NatsConfig) -> None:
    """Create the stream, or check that the existing one holds the subjects and settings."""
    from nats.js.api import RetentionPolicy, StreamConfig
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(config.stream)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=config.stream,
                subjects=list(config.subjects),
                retention=RetentionPolicy(config.retention),
                max_age=config.max_age,
                duplicate_window=config.duplicate_window,
            )
        )
        return
    have = info.config
    missing = [s for s in config.subjects if s not in (have.subjects or [])]
    if missing:
        raise ConfigError(
            f"NATS stream {config.stream!r} exists with subjects {have.subjects}, "
            f"not {', '.join(missing)}: choose another stream name or fix the stream"
        )
