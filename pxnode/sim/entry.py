"""Entry points: serve on a socket until cancelled, or for the body of a context manager."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc

from protocols.secrets import Secret
from pxnode.listen import bind, local_port
from pxnode.listen import serve as serve_connections
from pxnode.sim.account import DEMO_API_KEY, DEMO_USERNAME
from pxnode.sim.config import SimConfig
from pxnode.sim.server import GatewaySim
from supervisors.config import GatewayConfig
from supervisors.registry import WallClock


def system_clock() -> Callable[[], float]:
    """The sim's unix time, read per call like the node's (``WallClock``)."""
    return WallClock()


def gateway_config(url: str, **settings: Any) -> GatewayConfig:
    """A node's gateway settings for the sim at ``url``: its hubs and the demo login.

    ``settings`` are further ``GatewayConfig`` fields, e.g.
    ``accounts=[DEMO_ACCOUNT_ID]`` for the demo account's user-hub events.
    """
    return GatewayConfig(
        api_url=url,
        market_hub=f"{url}/hubs/market",
        user_hub=f"{url}/hubs/user",
        username=DEMO_USERNAME,
        api_key=Secret(DEMO_API_KEY),
        **settings,
    )


@asynccontextmanager
async def running(
    config: SimConfig, *, wall_time: Callable[[], float] | None = None
) -> AsyncIterator[GatewaySim]:
    """A gateway listening on ``config.host``/``config.port`` for the body of the block.

    ``ConfigError`` if it cannot listen there; no connection can end it (``pxnode.listen``).
    """
    gateway = GatewaySim(config, wall_time=wall_time or system_clock())
    listener = await bind(config.host, config.port, "gateway")
    async with listener, anyio.create_task_group() as tg:
        gateway.port = local_port(listener)
        await tg.start(gateway.run)
        tg.start_soon(serve_connections, listener, gateway.handle, gateway.counters)
        try:
            yield gateway
        finally:
            tg.cancel_scope.cancel()


async def serve(
    config: SimConfig,
    *,
    wall_time: Callable[[], float] | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; reports the bound port through ``task_status``."""
    async with running(config, wall_time=wall_time) as gateway:
        task_status.started(gateway.port)
        await anyio.sleep_forever()
