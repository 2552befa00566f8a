"""A whole node wired to a ``GatewaySim`` without a socket, for virtual-time tests.

``sim_node`` runs the real node table (``open_node``) with one seam changed, its
``Network``: auth, history and negotiation reach the sim's ``RestHandler``
through an ``httpx.MockTransport``, and each hub dial becomes a pair of memory
streams whose far end the sim serves with ``GatewaySim.handle``. Nothing waits
on the operating system, so trio's ``MockClock(autojump_threshold=0)`` runs
minutes of outages, cool-downs and timeouts in milliseconds.

Each hub has its own host (``market.sim``, ``user.sim``), so a test can refuse
or hang the dials of one hub.

Clocks: the sim and the node each read unix time with a ``WallClock`` (the
system's unix time, plus the virtual time MockClock jumped since its first
call). The node's clock makes its first call at the latest at the clock actor's
first tick, so the two disagree by at most that much virtual time, well inside
validation's 5 s; a step of the system clock moves both.

``node_tasks`` (the task census that proves a stopped node left nothing
running) is trio's, like MockClock.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import trio

from actors.connection import HubTimings
from actors.health import HealthConfig
from protocols.hubs import HubName
from protocols.secrets import Secret
from pxnode.sim import DEMO_ACCOUNT_ID, DEMO_API_KEY, DEMO_USERNAME, Fault, GatewaySim, SimConfig
from supervisors.children import Network
from supervisors.config import BarsConfig, GatewayConfig, NodeConfig
from supervisors.mailbox import Mailbox, MailboxSpec, OverflowPolicy
from supervisors.node import Node, open_node
from supervisors.registry import WallClock
from supervisors.supervisor import unwrap

from ._memory import Pipe, socket_pair

MNQ, ES = "CON.F.US.MNQ.Z25", "CON.F.US.EP.Z25"
ACCOUNT = DEMO_ACCOUNT_ID
API_KEY = DEMO_API_KEY
HOSTS: dict[HubName, str] = {"market": "market.sim", "user": "user.sim"}


# ------------------------------------------------------------------ the wire


@dataclass(frozen=True, slots=True)
class RestCall:
    at: float  # anyio time
    path: str
    status: int
    body: bytes = b""  # the request body (never holds a secret but the login's key)


class SimNet:
    """The node's seams into one sim: ``connect`` for the hubs, ``transport()`` for HTTP.

    ``refused`` hosts fail every dial (connection refused), ``hanging`` hosts
    never answer one. Every dial, REST call and issued token is recorded.
    """

    def __init__(self, sim: GatewaySim, tg: anyio.abc.TaskGroup) -> None:
        self.sim = sim
        self._tg = tg
        self.refused: set[str] = set()
        self.hanging: set[str] = set()
        self.dials: list[tuple[float, str]] = []
        self.rest: list[RestCall] = []
        self.tokens: list[str] = []  # every JWT the sim handed out, in order
        self._pipes: list[Pipe] = []  # (node end, sim end) per dial

    async def connect(self, host: str, port: int) -> anyio.abc.ByteStream:
        self.dials.append((anyio.current_time(), host))
        if host in self.hanging:
            await anyio.sleep_forever()
        if host in self.refused:
            raise ConnectionRefusedError(f"{host}:{port}: connection refused")
        client, server = socket_pair()
        self._pipes += (client, server)
        self._tg.start_soon(self.sim.handle, server)
        return client

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._respond)

    def network(self) -> Network:
        """The node's seam: every hub dial and REST request goes to this sim."""
        return Network(connect=self.connect, http=self.transport)

    def _respond(self, request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode("ascii")
        status, headers, body = self.sim.rest.handle(
            request.method, target, request.headers.raw, request.content
        )
        path = target.partition("?")[0]
        content = request.content if not path.startswith("/api/Auth/") else b""
        self.rest.append(RestCall(anyio.current_time(), path, status, content))
        if status == 200 and path.startswith("/api/Auth/"):
            answer = json.loads(body)
            token = answer.get("token") or answer.get("newToken")
            if token:
                self.tokens.append(token)
        return httpx.Response(status, headers=headers, content=body)

    def calls(self, path: str) -> list[RestCall]:
        return [call for call in self.rest if call.path == path]

    def hub_dials(self, hub: HubName) -> list[float]:
        return [at for at, host in self.dials if host == HOSTS[hub]]

    def open_sockets(self) -> int:
        """Node-side socket ends not closed yet."""
        return sum(1 for pipe in self._pipes[::2] if not pipe.closed)

    def close(self) -> None:
        for pipe in self._pipes:
            pipe.close()


# -------------------------------------------------------------------- taps


class Tap:
    """A test's own BLOCK mailbox on a node topic; it outlives the node (read it after).

    Large enough never to fill in a test, so it never pushes back on the node.
    """

    def __init__(self, node: Node, topic: str, capacity: int = 1 << 16) -> None:
        self.mailbox: Mailbox[Any] = Mailbox(f"test.{topic}", MailboxSpec(capacity))
        assert self.mailbox.spec.policy is OverflowPolicy.BLOCK
        node.topic(topic).attach(self.mailbox)
        self.seen: list[Any] = []
        self._disposed = False

    def take(self) -> list[Any]:
        """Everything told so far (cumulative: after the node stopped, everything it told;
        after ``dispose``, what was taken until then)."""
        if not self._disposed:
            self.seen += self.mailbox.drain(1 << 30)
        return self.seen

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.take() if isinstance(m, kind)]

    def dispose(self) -> None:
        self.take()
        self._disposed = True
        self.mailbox.dispose()


# ---------------------------------------------------------------- the node


@dataclass
class SimNode:
    node: Node
    sim: GatewaySim
    net: SimNet
    events: Tap
    stopped: tuple[float, float] | None = None
    """Virtual time the node took to stop, and when it was stopped (after a normal exit)."""
    left_running: list[str] = field(default_factory=list)
    """Tasks of the node still alive once ``open_node`` returned (trio only): none, ever."""
    left_open: int = 0
    """Node-side sockets still open once ``open_node`` returned."""

    def wall(self) -> float:
        return self.sim.wall_time()


def node_config(
    *,
    health: HealthConfig | None = None,
    api_key: str = API_KEY,
    tick_interval: float = 0.25,
    hub_timings: HubTimings | None = None,
) -> NodeConfig:
    """Two contracts, 1min bars, both hubs at the sim's hosts, the demo account."""
    return NodeConfig(
        contracts=[MNQ, ES],
        tick_interval=tick_interval,
        history_bars=0,  # no start-up back-fill (days of synthetic history); gaps still are
        bars=BarsConfig(timeframes=["1min"]),
        health=health or HealthConfig(),
        gateway=GatewayConfig(
            api_url="http://api.sim",
            market_hub=f"http://{HOSTS['market']}/hubs/market",
            user_hub=f"http://{HOSTS['user']}/hubs/user",
            accounts=[ACCOUNT],
            username=DEMO_USERNAME,
            api_key=Secret(api_key),
            hub_timings=hub_timings or HubTimings(),
        ),
    )


@asynccontextmanager
async def sim_node(
    *,
    config: NodeConfig | None = None,
    sim: SimConfig | None = None,
    refused: tuple[HubName, ...] = (),
    faults: tuple[Fault, ...] = (),
    overrides: dict[str, Any] | None = None,
) -> AsyncIterator[SimNode]:
    """A sim and the real node table talking to it over in-memory sockets.

    ``refused`` hubs refuse every dial from the start; ``faults`` are applied to
    the sim before the node starts (armed REST failures meet the first login).
    An escalation of the node leaves the block as itself (not in a group).
    """
    config = config or node_config()
    sim_config = sim or SimConfig(seed=3, rate=50.0, contracts=(MNQ, ES), tick=0.1)
    try:
        async with anyio.create_task_group() as tg:
            gateway_sim = GatewaySim(sim_config, wall_time=WallClock())
            await tg.start(gateway_sim.run)
            net = SimNet(gateway_sim, tg)
            net.refused.update(HOSTS[h] for h in refused)
            for fault in faults:
                gateway_sim.apply(fault)
            try:
                async with open_node(config, overrides, network=net.network()) as node:
                    events = Tap(node, "topic.events")
                    handle = SimNode(node, gateway_sim, net, events)
                    try:
                        yield handle
                    finally:
                        events.dispose()
                        exiting_at = anyio.current_time()
                handle.stopped = (anyio.current_time() - exiting_at, exiting_at)
                handle.left_running = node_tasks()
                handle.left_open = net.open_sockets()
            finally:
                tg.cancel_scope.cancel()
                net.close()
    except BaseExceptionGroup as group:
        error = unwrap(group)
        if error is group:
            raise
        raise error from error.__cause__


def node_tasks() -> list[str]:
    """Names of the live tasks running node code (actors but the sim's, supervisors)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    names: list[str] = []
    todo = [root]
    while todo:
        task = todo.pop()
        names.append(task.name)
        todo.extend(t for nursery in task.child_nurseries for t in nursery.child_tasks)
    return [n for n in names if n.startswith(("actors.", "supervisors."))]


async def until(predicate: Any, limit: float = 60.0, step: float = 0.05) -> None:
    """Poll a condition on the node's observable state (virtual time)."""
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - the node's state is read, not awaited
            await anyio.sleep(step)
