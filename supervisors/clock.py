"""The node's clock: ticks for timers, and mailbox statistics for stats.

Bars close on time and stats sample on time only because something tells them
the time; this actor is that something. It is part of the runtime (it reads
the registry's mailbox statistics), which is why it lives in ``supervisors``.
"""

from __future__ import annotations

from typing import Any

import anyio

from protocols.interfaces import ActorContext, Inbox
from protocols.messages import MailboxesSampled, Tick

from .registry import Registry


class ClockActor:
    def __init__(self, registry: Registry, interval: float, targets: tuple[str, ...]) -> None:
        self._registry = registry
        self._interval = interval
        self._targets = targets

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._tick, ctx)
            async for _ in inbox:
                pass  # the clock takes no messages; the end of its inbox stops it
            tg.cancel_scope.cancel()

    async def _tick(self, ctx: ActorContext) -> None:
        refs = [ctx.ref(name) for name in self._targets if name in self._registry]
        stats = ctx.ref("stats") if "stats" in self._registry else None
        deadline = anyio.current_time()
        while True:
            deadline += self._interval
            await anyio.sleep_until(deadline)
            tick = Tick(now=ctx.wall_time())
            for ref in refs:
                ref.try_tell(tick)  # a busy actor gets the next one: ticks carry absolute time
            if stats is not None:
                stats.try_tell(MailboxesSampled(self._registry.mailbox_statistics()))
