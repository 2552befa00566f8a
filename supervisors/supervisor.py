"""Supervisors with OTP semantics: child specs, restart types, strategies, intensity.

Theory of operation
-------------------
A ``Supervisor`` is itself an actor, so supervisors nest into a tree. It owns
one task group; every child incarnation runs in that group inside its own
cancel scope, and reports exactly one ``_Exited`` to the supervisor's control
channel when it ends. The supervisor is the only reader of that channel, so
all decisions (restart, stop siblings, escalate) are taken sequentially by one
task: there is nothing to lock.

* Restart type (per child): ``permanent`` always restarts, ``transient`` only
  after a failure, ``temporary`` never.
* Strategy (per supervisor): ``one_for_one`` restarts the failed child,
  ``one_for_all`` restarts every child, ``rest_for_one`` the failed child and
  those started after it. Siblings are stopped in reverse start order.
* Intensity: more than ``intensity`` restarts within ``period`` seconds make
  the supervisor stop all children and raise ``Escalation`` to its parent.
* Delay: a child's ``Backoff`` (reset after a stable run), or, when it has a
  ``BreakerPolicy``, the circuit breaker decides (and its own give-up replaces
  intensity). A ``half_open`` probe becomes ``closed`` only when the child calls
  ``ctx.report_healthy()``.
* Cancellation is never a failure; a one-member exception group is unwrapped.
* Shutdown is ordered (reverse start order): the child's mailbox is closed so
  it drains and returns; after ``shutdown`` seconds it is cancelled.
* A failure of a type listed in the child's ``fatal`` escalates at once: a
  restart cannot fix rejected credentials, it would only hammer the gateway.
  That holds while stopping too: a tape whose final flush fails is the
  supervisor's error, though no exit is acted on any more.
* A ``significant`` child that ends for good ends its supervisor too (OTP's
  auto_shutdown): normally if it ended normally, with ``Escalation`` otherwise.

Every start, exit, restart, health report, breaker transition and escalation
is told (``tell_nowait``) to the ``events`` ref, if one is given.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from protocols.errors import Escalation
from protocols.interfaces import ActorContext, Inbox, Ref
from protocols.messages import (
    BreakerTransitioned,
    ChildExited,
    ChildHealthy,
    ChildRestarting,
    ChildStarted,
    ExitReason,
    SupervisorEscalated,
)

from .backoff import NO_BACKOFF, Backoff
from .breaker import BreakerPolicy, CircuitBreaker, Escalate, Transition
from .mailbox import DEFAULT_MAILBOX, Mailbox, MailboxSpec
from .registry import Registry


class RestartType(enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start, restart and stop one child (an actor or a nested supervisor)."""

    name: str
    factory: Callable[[], Any]
    restart: RestartType = RestartType.PERMANENT
    shutdown: float = 5.0
    significant: bool = False
    mailbox: MailboxSpec = DEFAULT_MAILBOX
    backoff: Backoff = NO_BACKOFF
    breaker: BreakerPolicy | None = None
    fatal: tuple[type[Exception], ...] = ()
    """Failures no restart can fix (rejected credentials): escalate at once."""


def unwrap(exc: BaseException) -> BaseException:
    """A one-member exception group is its member (recursively)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@dataclass(slots=True)
class _Exited:
    child: _Child
    incarnation: int
    reason: ExitReason
    error: BaseException | None


@dataclass(slots=True)
class _StartDue:
    child: _Child
    incarnation: int
    probe: bool


@dataclass(slots=True)
class _Healthy:
    child: _Child
    incarnation: int


@dataclass(slots=True)
class _ShutdownRequested:
    pass


_Control = _Exited | _StartDue | _Healthy | _ShutdownRequested


@dataclass(slots=True, eq=False)
class _Child:
    spec: ChildSpec
    mailbox: Mailbox[Any]
    breaker: CircuitBreaker | None
    incarnation: int = 0
    running: bool = False
    scope: anyio.CancelScope | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    started_at: float = 0.0
    attempt: int = 0
    healthy: bool = False
    pending: tuple[float, bool] | None = None  # (delay, probe) of the decided restart
    failure: BaseException | None = None  # how the last incarnation failed, if it did


class _ChildContext:
    """The ``ActorContext`` one incarnation of a child sees."""

    __slots__ = ("_child", "_incarnation", "_supervisor")

    def __init__(self, supervisor: Supervisor, child: _Child, incarnation: int) -> None:
        self._supervisor = supervisor
        self._child = child
        self._incarnation = incarnation

    @property
    def name(self) -> str:
        return self._child.spec.name

    def ref(self, name: str) -> Ref[Any]:
        return self._supervisor.registry.ref(name)

    def wall_time(self) -> float:
        return self._supervisor.registry.wall_time()

    def report_healthy(self) -> None:
        child = self._child
        if child.incarnation == self._incarnation and not child.healthy:
            child.healthy = True
            self._supervisor._control_send.send_nowait(_Healthy(child, self._incarnation))


class Supervisor:
    """An OTP-style supervisor; run it as a child of another or at the root via ``run``."""

    def __init__(
        self,
        name: str,
        children: list[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 3,
        period: float = 5.0,
        registry: Registry | None = None,
        rng: random.Random | None = None,
        events: str | None = "topic.events",
    ) -> None:
        self.name = name
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self.registry = registry if registry is not None else Registry()
        self._rng = rng if rng is not None else random.Random(0)
        self._events_name = events
        self._children: list[_Child] = []
        for spec in children:
            mailbox: Mailbox[Any] = Mailbox(spec.name, spec.mailbox)
            self.registry.register_mailbox(mailbox)
            breaker = CircuitBreaker(spec.breaker, self._rng) if spec.breaker else None
            self._children.append(_Child(spec, mailbox, breaker))
        self._restarts: deque[float] = deque(maxlen=intensity + 1)
        # Control channel: at most one pending message per child per kind, plus shutdown.
        self._control_send, self._control_recv = anyio.create_memory_object_stream[_Control](
            4 * len(self._children) + 4
        )
        self._tg: TaskGroup | None = None
        self.started = anyio.Event()
        """Set once every child has been started the first time."""

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} {self.strategy.value} children={len(self._children)}>"

    def child_names(self) -> list[str]:
        return [c.spec.name for c in self._children]

    # ------------------------------------------------------------------ events

    def _emit(self, event: Any) -> None:
        if self._events_name is None:
            return
        try:
            self.registry.ref(self._events_name).tell_nowait(event)
        except KeyError:
            pass
        except anyio.WouldBlock:
            self.registry.count_lost_event()

    # --------------------------------------------------------------------- run

    async def run(self, inbox: Inbox[Any], ctx: ActorContext | None = None) -> None:
        """Start every child in order, supervise until ``inbox`` ends, then stop in reverse order.

        Raises ``Escalation`` when the children cannot be kept running.
        """
        escalation: Escalation | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._watch_inbox, inbox)
                for child in self._children:
                    await self._start(child)
                self.started.set()
                escalation = await self._supervise()
                tg.cancel_scope.cancel()
        finally:
            self._control_send.close()
            self._control_recv.close()
            for child in self._children:
                child.mailbox.dispose()
        if escalation is not None:
            self._emit(SupervisorEscalated(self.name, escalation.reason))
            raise escalation

    async def _watch_inbox(self, inbox: Inbox[Any]) -> None:
        async for _ in inbox:
            pass  # a supervisor takes no messages; its inbox closing means "shut down"
        await self._control_send.send(_ShutdownRequested())

    async def _supervise(self) -> Escalation | None:
        async for msg in self._control_recv:
            if isinstance(msg, _ShutdownRequested):
                break
            if isinstance(msg, _Healthy):
                self._on_healthy(msg)
            elif isinstance(msg, _StartDue):
                child = msg.child
                if child.incarnation == msg.incarnation and not child.running:
                    if msg.probe and child.breaker is not None:
                        self._transitions(child, child.breaker.on_cooldown_elapsed(self._now()))
                    await self._start(child)
            else:
                self._emit(
                    ChildExited(
                        self.name,
                        msg.child.spec.name,
                        msg.reason,
                        None if msg.error is None else repr(msg.error),
                    )
                )
                if msg.child.incarnation == msg.incarnation and msg.reason != "cancelled":
                    done, escalation = self._on_exited(msg)
                    if done:
                        await self._shutdown(self._children)
                        return escalation
                    await self._restart(msg.child)
        await self._shutdown(self._children)
        return self._failed_while_stopping()

    def _failed_while_stopping(self) -> Escalation | None:
        for child in self._children:
            if isinstance(child.failure, child.spec.fatal):
                return self._escalation(
                    f"{child.spec.name!r} failed: {child.failure}", child.failure
                )
        return None

    def _now(self) -> float:
        return anyio.current_time()

    async def _start(self, child: _Child) -> None:
        assert self._tg is not None
        child.incarnation += 1
        child.healthy = False
        child.done = anyio.Event()
        await self._tg.start(self._run_child, child, child.incarnation)
        self._emit(ChildStarted(self.name, child.spec.name, child.incarnation))

    async def _run_child(
        self, child: _Child, incarnation: int, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        reason: ExitReason = "normal"
        error: BaseException | None = None
        with anyio.CancelScope() as scope:
            child.scope = scope
            child.running = True
            child.started_at = self._now()
            task_status.started()
            try:
                actor = child.spec.factory()
                await actor.run(child.mailbox, _ChildContext(self, child, incarnation))
            except Exception as exc:
                reason, error = "failed", unwrap(exc)
        if scope.cancelled_caught and error is None:
            reason = "cancelled"
        child.failure = error
        child.running = False
        child.done.set()
        self._control_send.send_nowait(_Exited(child, incarnation, reason, error))

    # ------------------------------------------------------------- decisions

    def _on_exited(self, msg: _Exited) -> tuple[bool, Escalation | None]:
        """Decide what an exit means: (supervisor done?, escalation to raise or None).

        When not done, the caller restarts ``msg.child`` (and its strategy group)
        unless its restart type says otherwise; the delay is prepared here.
        """
        child, spec = msg.child, msg.child.spec
        failed = msg.reason == "failed"
        if failed and isinstance(msg.error, spec.fatal):
            return True, self._escalation(f"{spec.name!r} failed: {msg.error}", msg.error)
        wants_restart = spec.restart is RestartType.PERMANENT or (
            spec.restart is RestartType.TRANSIENT and failed
        )
        if not wants_restart:
            child.pending = None
            if not spec.significant:
                return False, None
            if failed:
                return True, self._escalation(f"significant child {spec.name!r} failed", msg.error)
            return True, None
        now = self._now()
        if child.breaker is not None and failed:
            action, transitions = child.breaker.on_failure(now)
            self._transitions(child, transitions)
            if isinstance(action, Escalate):
                return True, self._escalation(action.reason, msg.error)
            child.pending = (action.delay, any(t.new == "open" for t in transitions))
            return False, None
        self._restarts.append(now)
        if len(self._restarts) > self.intensity and now - self._restarts[0] <= self.period:
            reason = f"more than {self.intensity} restarts in {self.period:g} s ({spec.name!r})"
            return True, self._escalation(reason, msg.error)
        backoff = child.spec.backoff
        if now - child.started_at >= backoff.reset_after:
            child.attempt = 0
        child.pending = (backoff.delay(child.attempt, self._rng), False)
        child.attempt += 1
        return False, None

    async def _restart(self, child: _Child) -> None:
        if child.pending is None:
            return
        delay, probe = child.pending
        child.pending = None
        if self.strategy is Strategy.ONE_FOR_ONE:
            group = [child]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            group = list(self._children)
        else:
            group = self._children[self._children.index(child) :]
        await self._shutdown([c for c in group if c is not child], graceful=False)
        assert self._tg is not None
        for member in group:
            self._emit(ChildRestarting(self.name, member.spec.name, child.attempt, delay))
        due = [_StartDue(m, m.incarnation, probe and m is child) for m in group]
        self._tg.start_soon(self._start_later, due, delay)

    async def _start_later(self, due: list[_StartDue], delay: float) -> None:
        """After ``delay``, ask for the starts in start order (one sleep for the group)."""
        await anyio.sleep(delay)
        for msg in due:
            await self._control_send.send(msg)

    def _on_healthy(self, msg: _Healthy) -> None:
        child = msg.child
        if child.incarnation != msg.incarnation:
            return
        self._emit(ChildHealthy(self.name, child.spec.name))
        if child.breaker is not None:
            self._transitions(child, child.breaker.on_healthy(self._now()))

    def _transitions(self, child: _Child, transitions: list[Transition]) -> None:
        for t in transitions:
            self._emit(BreakerTransitioned(self.name, child.spec.name, t.old, t.new, t.cooldown))

    def _escalation(self, reason: str, error: BaseException | None) -> Escalation:
        escalation = Escalation(self.name, reason)
        escalation.__cause__ = error
        return escalation

    # ---------------------------------------------------------------- stopping

    async def _shutdown(self, children: list[_Child], *, graceful: bool = True) -> None:
        """Stop ``children`` in reverse start order.

        Graceful: close the mailbox so the child drains and returns, cancel it
        after ``spec.shutdown`` seconds. Otherwise (a strategy restart) cancel
        at once. A pending delayed start is invalidated either way.
        """
        for child in reversed(children):
            if child.running:
                if graceful and child.spec.shutdown > 0:
                    child.mailbox.close()
                    with anyio.move_on_after(child.spec.shutdown):
                        await child.done.wait()
                if child.running and child.scope is not None:
                    child.scope.cancel()
                    await child.done.wait()
            child.incarnation += 1
