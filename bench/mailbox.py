"""Mailbox costs: awaited tell/receive per message vs drained batches; ask round trips.

Run: .venv/bin/python bench/mailbox.py [--messages N]
Prints µs per message for each pattern on trio and asyncio, and the ratio of
each against the per-message await baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import anyio

from protocols.messages import Request
from supervisors.mailbox import Mailbox, MailboxSpec
from supervisors.ref import MailboxRef


async def awaited(n: int) -> float:
    """Baseline: producer awaits tell, consumer awaits receive, one message at a time."""
    box: Mailbox[int] = Mailbox("bench", MailboxSpec(1024))
    ref = MailboxRef(box)

    async def consume() -> None:
        for _ in range(n):
            await box.receive()

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        for i in range(n):
            await ref.tell(i)
    elapsed = time.perf_counter() - start
    box.dispose()
    return elapsed / n * 1e6


async def batched(n: int, batch: int = 512) -> float:
    """Hot path: producer tell_nowait while there is room, consumer drains in batches."""
    box: Mailbox[int] = Mailbox("bench", MailboxSpec(1024))
    ref = MailboxRef(box)

    async def consume() -> None:
        got = 0
        while got < n:
            got += len(await box.receive_batch(batch))

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        for i in range(n):
            try:
                ref.tell_nowait(i)
            except anyio.WouldBlock:
                await ref.tell(i)
    elapsed = time.perf_counter() - start
    box.dispose()
    return elapsed / n * 1e6


def drain_only(n: int, batch: int = 512) -> float:
    """The consumer's side alone: draining an already full mailbox in batches."""
    box: Mailbox[int] = Mailbox("bench", MailboxSpec(n))
    for i in range(n):
        box.send_nowait(i)
    start = time.perf_counter()
    got = 0
    while got < n:
        got += len(box.drain(batch))
    elapsed = time.perf_counter() - start
    box.dispose()
    return elapsed / n * 1e6


async def ask_round_trips(n: int) -> tuple[float, float]:
    box: Mailbox[Any] = Mailbox("echo", MailboxSpec(16))
    ref = MailboxRef(box)

    async def echo() -> None:
        async for req in box:
            assert isinstance(req, Request)
            req.reply.tell_nowait(req.body)

    samples: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(echo)
        for i in range(n):
            t0 = time.perf_counter()
            await ref.ask(i, timeout=5)
            samples.append((time.perf_counter() - t0) * 1e6)
        box.close()
    box.dispose()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


async def main(n: int, backend: str) -> None:
    base = await awaited(n)
    drained = await batched(n)
    drain = drain_only(n)
    p50, p99 = await ask_round_trips(max(1000, n // 20))
    print(f"[{backend}]")
    print(f"  await tell/receive per message : {base:7.3f} µs  (baseline 1.00x)")
    print(f"  tell_nowait + drained batches  : {drained:7.3f} µs  ({base / drained:5.1f}x faster)")
    print(f"  drain alone (consumer side)    : {drain:7.3f} µs  ({base / drain:5.1f}x faster)")
    print(
        f"  ask round trip p50 / p99       : {p50:7.2f} / {p99:.2f} µs"
        f"  ({p50 / base:.1f}x baseline)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    for backend in ("trio", "asyncio"):
        anyio.run(main, args.messages, backend, backend=backend)
