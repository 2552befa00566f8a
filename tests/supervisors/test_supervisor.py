"""Supervisor semantics in virtual time: strategies, restart types, intensity, backoff, breaker."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from protocols.errors import Escalation
from protocols.interfaces import ActorContext, Inbox
from protocols.messages import (
    BreakerTransitioned,
    ChildExited,
    ChildRestarting,
    ChildStarted,
    SupervisorEscalated,
)
from supervisors.backoff import Backoff
from supervisors.breaker import BreakerPolicy
from supervisors.mailbox import Mailbox, MailboxSpec, OverflowPolicy
from supervisors.registry import Registry
from supervisors.supervisor import ChildSpec, RestartType, Strategy, Supervisor

pytestmark = pytest.mark.trio


class Boom(Exception):
    pass


class Script:
    """A test actor whose life is a script: log start, wait, then fail / return / idle."""

    def __init__(
        self,
        log: list[tuple[float, str]],
        name: str,
        *,
        fail_after: float | None = None,
        return_after: float | None = None,
        healthy_after: float | None = None,
        ignore_stop: bool = False,
    ) -> None:
        self.log, self.name = log, name
        self.fail_after, self.return_after = fail_after, return_after
        self.healthy_after, self.ignore_stop = healthy_after, ignore_stop

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        self.log.append((anyio.current_time(), f"start {self.name}"))
        try:
            if self.healthy_after is not None:
                await anyio.sleep(self.healthy_after)
                ctx.report_healthy()
            if self.fail_after is not None:
                await anyio.sleep(self.fail_after)
                raise Boom(self.name)
            if self.return_after is not None:
                await anyio.sleep(self.return_after)
                return
            if self.ignore_stop:
                await anyio.sleep_forever()
            async for _ in inbox:
                pass
            self.log.append((anyio.current_time(), f"stop {self.name}"))
        except anyio.get_cancelled_exc_class():
            self.log.append((anyio.current_time(), f"cancelled {self.name}"))
            raise


def spec(name: str, make: Callable[[], Any], **kw: Any) -> ChildSpec:
    return ChildSpec(name=name, factory=make, **kw)


@asynccontextmanager
async def running(sup: Supervisor) -> AsyncIterator[list[Any]]:
    """Run ``sup`` at the root; yield the list its events land in; stop it on exit."""
    events: list[Any] = []
    root: Mailbox[Any] = Mailbox("root", MailboxSpec(1))
    with sup.registry.topic("topic.events").subscribe(
        "test", MailboxSpec(10_000, OverflowPolicy.DROP_NEWEST)
    ) as sub:

        async def collect() -> None:
            async for ev in sub:
                events.append(ev)

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            async with anyio.create_task_group() as node:
                node.start_soon(sup.run, root)
                try:
                    yield events
                finally:
                    root.close()
            tg.cancel_scope.cancel()
    root.dispose()


def starts(log: list[tuple[float, str]]) -> list[tuple[float, str]]:
    return [e for e in log if e[1].startswith("start")]


async def test_one_for_one_restarts_only_the_failed_child(autojump_clock: object) -> None:
    log: list[tuple[float, str]] = []
    sup = Supervisor(
        "s",
        [
            spec("a", lambda: Script(log, "a", fail_after=1)),
            spec("b", lambda: Script(log, "b")),
        ],
        intensity=100,
        period=1,
    )
    async with running(sup):
        await anyio.sleep(3.5)
    assert starts(log) == [
        (0, "start a"),
        (0, "start b"),
        (1, "start a"),
        (2, "start a"),
        (3, "start a"),
    ]


async def test_one_for_all_restarts_every_child(autojump_clock: object) -> None:
    log: list[tuple[float, str]] = []
    sup = Supervisor(
        "s",
        [
            spec("a", lambda: Script(log, "a")),
            spec("b", lambda: Script(log, "b", fail_after=1)),
            spec("c", lambda: Script(log, "c")),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        intensity=100,
    )
    async with running(sup) as events:
        await anyio.sleep(1.5)
    assert log[:7] == [
        (0, "start a"),
        (0, "start b"),
        (0, "start c"),
        (1, "cancelled c"),
        (1, "cancelled a"),
        (1, "start a"),
        (1, "start b"),
    ]
    cancelled = [e.child for e in events if isinstance(e, ChildExited) and e.reason == "cancelled"]
    assert cancelled == ["c", "a"]  # reverse start order; cancellation is not a failure
    failed = [e.child for e in events if isinstance(e, ChildExited) and e.reason == "failed"]
    assert failed == ["b"]


async def test_rest_for_one_restarts_the_failed_and_later_children(autojump_clock: object) -> None:
    log: list[tuple[float, str]] = []
    sup = Supervisor(
        "s",
        [
            spec("a", lambda: Script(log, "a")),
            spec("b", lambda: Script(log, "b", fail_after=1)),
            spec("c", lambda: Script(log, "c")),
        ],
        strategy=Strategy.REST_FOR_ONE,
        intensity=100,
    )
    async with running(sup):
        await anyio.sleep(1.5)
    assert starts(log) == [
        (0, "start a"),
        (0, "start b"),
        (0, "start c"),
        (1, "start b"),
        (1, "start c"),
    ]


@pytest.mark.parametrize(
    ("restart", "fail", "restarted"),
    [
        (RestartType.PERMANENT, False, True),
        (RestartType.PERMANENT, True, True),
        (RestartType.TRANSIENT, False, False),
        (RestartType.TRANSIENT, True, True),
        (RestartType.TEMPORARY, False, False),
        (RestartType.TEMPORARY, True, False),
    ],
)
async def test_restart_types(
    autojump_clock: object, restart: RestartType, fail: bool, restarted: bool
) -> None:
    log: list[tuple[float, str]] = []
    kw: dict[str, Any] = {"fail_after": 1.0} if fail else {"return_after": 1.0}
    sup = Supervisor(
        "s", [spec("x", lambda: Script(log, "x", **kw), restart=restart)], intensity=100
    )
    async with running(sup):
        await anyio.sleep(1.5)
    assert (len(starts(log)) == 2) is restarted


async def test_intensity_exceeded_escalates(autojump_clock: object) -> None:
    log: list[tuple[float, str]] = []
    sup = Supervisor(
        "s",
        [
            spec("calm", lambda: Script(log, "calm")),
            spec("x", lambda: Script(log, "x", fail_after=1)),
        ],
        intensity=3,
        period=5,
    )
    events: list[Any] = []
    with sup.registry.topic("topic.events").subscribe(
        "t", MailboxSpec(1000, OverflowPolicy.DROP_NEWEST)
    ) as sub:
        root: Mailbox[Any] = Mailbox("root")
        with pytest.raises(Escalation) as info:
            await sup.run(root)
        events = sub.drain(1000)
        root.dispose()
    assert "more than 3 restarts in 5 s" in str(info.value)
    assert isinstance(info.value.__cause__, Boom)
    assert anyio.current_time() == 4  # failures at 1, 2, 3, 4: the fourth restart is one too many
    assert (4, "stop calm") in log  # siblings are shut down gracefully before escalating
    assert isinstance(events[-1], SupervisorEscalated)


async def test_slow_failures_never_exceed_intensity(autojump_clock: object) -> None:
    log: list[tuple[float, str]] = []
    sup = Supervisor(
        "s", [spec("x", lambda: Script(log, "x", fail_after=2))], intensity=3, period=5
    )
    async with running(sup):
        await anyio.sleep(3600)
    assert len(starts(log)) == 1800


async def test_backoff_delays_exact_and_reset_after_stable_run(autojump_clock: object) -> None:
    log: list[tuple[float, str]] = []
    lives = iter([0, 0, 0, 0, 100, 0, 0])

    def make() -> Script:
        return Script(log, "x", fail_after=next(lives, 0))

    backoff = Backoff(min_backoff=1, max_backoff=4, factor=2, jitter=0, reset_after=50)
    sup = Supervisor("s", [spec("x", make, backoff=backoff)], intensity=1000, period=1)
    async with running(sup) as events:
        await anyio.sleep(119)
    times = [t for t, _ in starts(log)]
    # fail at once: wait 1, 2, 4, 4 (capped); then 100 s stable run resets the attempt to 0.
    assert times == [0, 1, 3, 7, 11, 112, 114, 118]
    delays = [e.delay for e in events if isinstance(e, ChildRestarting)]
    assert delays[:7] == [1, 2, 4, 4, 1, 2, 4]


async def test_backoff_jitter_is_seeded_and_reproducible(autojump_clock: object) -> None:
    async def run_once() -> list[float]:
        log: list[tuple[float, str]] = []
        backoff = Backoff(min_backoff=1, max_backoff=30, factor=2, jitter=0.5)
        import random

        sup = Supervisor(
            "s",
            [spec("x", lambda: Script(log, "x", fail_after=0), backoff=backoff)],
            intensity=1000,
            rng=random.Random(7),
        )
        t0 = anyio.current_time()
        async with running(sup):
            await anyio.sleep(100)
        return [t - t0 for t, _ in starts(log)]

    first, second = await run_once(), await run_once()
    assert first == pytest.approx(second)
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert 0.5 <= gaps[0] <= 1.5 and 1 <= gaps[1] <= 3 and gaps[0] != 1.0


async def test_breaker_opens_probes_reopens_closes(autojump_clock: object) -> None:
    log: list[tuple[float, str]] = []
    # incarnations 1-5 fail at once (trip), 6 fails as a probe (reopen), 7 reports healthy.
    plan: Iterator[dict[str, Any]] = iter([dict(fail_after=0)] * 6 + [dict(healthy_after=1)])
    policy = BreakerPolicy(
        failure_threshold=5,
        window=60,
        cooldown=30,
        max_cooldown=300,
        jitter=0,
        backoff=Backoff(min_backoff=0, max_backoff=0, jitter=0),
    )
    sup = Supervisor("s", [spec("hub", lambda: Script(log, "hub", **next(plan)), breaker=policy)])
    async with running(sup) as events:
        await anyio.sleep(200)
    moves = [(e.old, e.new, e.cooldown) for e in events if isinstance(e, BreakerTransitioned)]
    assert moves == [
        ("closed", "open", 30),
        ("open", "half_open", 0),
        ("half_open", "open", 60),
        ("open", "half_open", 0),
        ("half_open", "closed", 0),
    ]
    assert [t for t, _ in starts(log)] == [0, 0, 0, 0, 0, 30, 90]


async def test_breaker_escalates_after_k_open_cycles(autojump_clock: object) -> None:
    log: list[tuple[float, str]] = []
    policy = BreakerPolicy(
        jitter=0, max_open_cycles=3, backoff=Backoff(min_backoff=0, max_backoff=0, jitter=0)
    )
    sup = Supervisor("s", [spec("hub", lambda: Script(log, "hub", fail_after=0), breaker=policy)])
    root: Mailbox[Any] = Mailbox("root")
    with pytest.raises(Escalation, match="open cycles"):
        await sup.run(root)
    root.dispose()
    # 5 fast failures, then probes after 30, 60, 120 s of cool-down; the third failed probe
    # gives up.
    assert [t for t, _ in starts(log)] == [0, 0, 0, 0, 0, 30, 90, 210]
    assert anyio.current_time() == 210


async def test_single_member_exception_group_is_unwrapped(autojump_clock: object) -> None:
    class Grouped:
        async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.fail)

        async def fail(self) -> None:
            raise Boom("inner")

    sup = Supervisor("s", [spec("g", Grouped, restart=RestartType.TEMPORARY)])
    async with running(sup) as events:
        await anyio.sleep(1)
    exits = [e for e in events if isinstance(e, ChildExited)]
    assert exits[0].reason == "failed" and exits[0].error == "Boom('inner')"


async def test_ordered_shutdown_with_timeout(autojump_clock: object) -> None:
    log: list[tuple[float, str]] = []
    sup = Supervisor(
        "s",
        [
            spec("a", lambda: Script(log, "a")),
            spec("stubborn", lambda: Script(log, "stubborn", ignore_stop=True), shutdown=7),
            spec("c", lambda: Script(log, "c")),
        ],
    )
    async with running(sup):
        await anyio.sleep(1)
    assert log[3:] == [(1, "stop c"), (8, "cancelled stubborn"), (8, "stop a")]


async def test_nested_supervisor_escalation_is_a_child_failure(autojump_clock: object) -> None:
    log: list[tuple[float, str]] = []
    registry = Registry()
    made = 0

    def inner() -> Supervisor:
        nonlocal made
        made += 1
        child = spec(f"x{made}", lambda: Script(log, "x", fail_after=1))
        return Supervisor(f"inner{made}", [child], intensity=0, registry=registry)

    outer = Supervisor(
        "outer", [spec("inner", inner, shutdown=60)], intensity=10, period=100, registry=registry
    )
    async with running(outer) as events:
        await anyio.sleep(2.5)
    assert [t for t, _ in starts(log)] == [0, 1, 2]
    escalated = [e.supervisor for e in events if isinstance(e, SupervisorEscalated)]
    assert escalated == ["inner1", "inner2"]
    started = [(e.supervisor, e.child) for e in events if isinstance(e, ChildStarted)]
    assert started[:4] == [
        ("outer", "inner"),
        ("inner1", "x1"),
        ("outer", "inner"),
        ("inner2", "x2"),
    ]


async def test_significant_child_ends_its_supervisor(autojump_clock: object) -> None:
    log: list[tuple[float, str]] = []
    sup = Supervisor(
        "s",
        [
            spec("a", lambda: Script(log, "a")),
            spec(
                "job",
                lambda: Script(log, "job", return_after=5),
                restart=RestartType.TRANSIENT,
                significant=True,
            ),
        ],
    )
    root: Mailbox[Any] = Mailbox("root")
    await sup.run(root)
    root.dispose()
    assert anyio.current_time() == 5
    assert log[-1] == (5, "stop a")


async def test_fatal_failure_escalates_without_a_restart(autojump_clock: object) -> None:
    log: list[tuple[float, str]] = []
    sup = Supervisor(
        "s",
        [spec("auth", lambda: Script(log, "auth", fail_after=1), fatal=(Boom,))],
        intensity=100,
    )
    root: Mailbox[Any] = Mailbox("root")
    with pytest.raises(Escalation, match="'auth' failed: auth") as info:
        await sup.run(root)
    root.dispose()
    assert isinstance(info.value.__cause__, Boom)
    assert len(starts(log)) == 1
