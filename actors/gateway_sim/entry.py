"""Entry points: serve on a socket, as a context manager, or as an actor."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from actors.gateway_sim.config import SimConfig
from actors.gateway_sim.server import GatewaySim
from protocols.interfaces import ActorContext, Inbox
from protocols.messages import Request, Stop


def system_clock() -> Callable[[], float]:
    """Unix time that follows ``anyio.current_time()`` (anchored once, at call time)."""
    offset = time.time() - anyio.current_time()  # wall-clock ok: anchor once, then anyio time
    return lambda: offset + anyio.current_time()


@asynccontextmanager
async def running(
    config: SimConfig, *, wall_time: Callable[[], float] | None = None
) -> AsyncIterator[GatewaySim]:
    """A gateway listening on ``config.host``/``config.port`` for the body of the block."""
    gateway = GatewaySim(config, wall_time=wall_time or system_clock())
    listener = await anyio.create_tcp_listener(local_host=config.host, local_port=config.port)
    async with listener, anyio.create_task_group() as tg:
        gateway.port = listener.extra(SocketAttribute.local_port)
        await tg.start(gateway.run)
        tg.start_soon(listener.serve, gateway.handle, tg)
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


class GatewaySimActor:
    """The gateway as an actor: serves until ``Stop`` arrives or the inbox closes.

    ``port`` is the bound port once running; any ``Request`` is answered with it.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.port: int | None = None

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        async with running(self.config, wall_time=ctx.wall_time) as gateway:
            self.port = gateway.port
            ctx.report_healthy()
            async for message in inbox:
                if isinstance(message, Stop):
                    return
                if isinstance(message, Request):
                    message.reply.tell_nowait(gateway.port)
