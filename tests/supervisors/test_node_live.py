"""A whole node against the simulated gateway over real loopback sockets (a few seconds)."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from protocols.errors import ConfigError
from protocols.messages import BarUpdated
from pxnode.sim import DEMO_ACCOUNT_ID, SimConfig, gateway_config, running
from pxnode.testing import node_config, sim_node
from supervisors.config import BarsConfig, GatewayConfig, NodeConfig
from supervisors.mailbox import MailboxSpec, OverflowPolicy
from supervisors.node import open_node

MNQ, ES = "CON.F.US.MNQ.Z25", "CON.F.US.EP.Z25"


def live_config(url: str, **gateway: object) -> NodeConfig:
    return NodeConfig(
        contracts=[MNQ, ES],
        bars=BarsConfig(timeframes=["1sec", "1min"]),
        tick_interval=0.1,
        gateway=gateway_config(url, accounts=[DEMO_ACCOUNT_ID], **gateway),
    )


@pytest.mark.slow
@pytest.mark.anyio
async def test_node_streams_bars_from_the_sim_on_both_backends() -> None:
    sim_config = SimConfig(seed=3, rate=400.0, contracts=(MNQ, ES))
    async with running(sim_config) as sim, open_node(live_config(sim.url)) as node:
        with node.topic("topic.bars").subscribe(
            "t", MailboxSpec(10_000, OverflowPolicy.DROP_OLDEST)
        ) as bars:
            contracts: set[str] = set()
            with anyio.fail_after(10):
                while contracts != {MNQ, ES}:
                    msg = await bars.receive()
                    if isinstance(msg, BarUpdated):
                        contracts.add(msg.bar.contract)
            with anyio.fail_after(10):
                while not (report := await node.health()).healthy:  # noqa: ASYNC110 - polls a snapshot
                    await anyio.sleep(0.1)
        assert report.hubs["market"].breaker == "closed"
        assert report.hubs["user"].connected
        frame = await node.bars(MNQ, "1sec", 5)
        assert frame.height >= 1


@pytest.mark.anyio
async def test_live_node_without_credentials_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROJECT_X_USERNAME", raising=False)
    monkeypatch.delenv("PROJECT_X_API_KEY", raising=False)
    config = NodeConfig(gateway=GatewayConfig(api_url="http://127.0.0.1:1"))
    with pytest.raises(ConfigError, match="PROJECT_X_USERNAME"):
        async with open_node(config):
            pass


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("contracts", "accounts", "message"),
    [
        (["CON.F.US.MNQ Z25"], [], "market hub: invalid contract id"),
        (["CON.F.US." + "C" * 300], [], "market hub: invalid contract id"),
        ([f"CON.F.US.X{k}.Z25" for k in range(1400)], [], "at most 4096"),
        ([MNQ], [0], "user hub: invalid account id 0"),
    ],
)
async def test_what_a_hub_would_refuse_is_a_config_error_at_open(
    monkeypatch: pytest.MonkeyPatch, contracts: list[str], accounts: list[int], message: str
) -> None:
    """It once left open_node as the subscription book's own error, a traceback."""
    monkeypatch.setenv("PROJECT_X_USERNAME", "demo")
    monkeypatch.setenv("PROJECT_X_API_KEY", "demo-api-key")
    gateway = GatewayConfig(api_url="http://127.0.0.1:1", accounts=accounts)
    with pytest.raises(ConfigError, match=message):
        async with open_node(NodeConfig(contracts=contracts, gateway=gateway)):
            pass


@pytest.mark.anyio
@pytest.mark.parametrize("variable", ["PROJECT_X_USERNAME", "PROJECT_X_API_KEY"])
async def test_credentials_that_are_not_utf8_are_a_config_error_without_the_value(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """Undecodable bytes reach Python as surrogates: no request could carry them, and the
    node waited on a login that never answered."""
    monkeypatch.setenv("PROJECT_X_USERNAME", "demo")
    monkeypatch.setenv("PROJECT_X_API_KEY", "demo-api-key")
    monkeypatch.setenv(variable, "secret\udcff")
    config = NodeConfig(gateway=GatewayConfig(api_url="http://127.0.0.1:1"))
    with pytest.raises(ConfigError, match="not valid UTF-8") as raised:
        async with open_node(config):
            pass
    assert "secret" not in str(raised.value)


@pytest.mark.slow
@pytest.mark.trio
async def test_subscribe_adds_contracts_and_timeframes_at_run_time() -> None:
    sim_config = SimConfig(seed=4, rate=400.0, contracts=(MNQ, ES))
    async with running(sim_config) as sim:
        config = msgspec.structs.replace(live_config(sim.url), contracts=[MNQ], history_bars=5)
        async with open_node(config) as node:
            with pytest.raises(ConfigError, match="invalid timeframe"):
                await node.subscribe([ES], ["7min"])
            await node.subscribe([ES], ["1sec", "5sec"])
            with node.stream_bars(capacity=10_000) as bars:
                seen: set[tuple[str, str]] = set()
                with anyio.fail_after(10):
                    while not {(ES, "5sec"), (MNQ, "5sec"), (ES, "1min")} <= seen:
                        msg = await bars.receive()
                        seen.add((msg.bar.contract, msg.bar.timeframe))
            # ES's past 1min bars came from History/retrieveBars, as MNQ's did at start
            with anyio.fail_after(10):
                while (await node.bars(ES, "1min", 10)).height < 3:  # noqa: ASYNC110
                    await anyio.sleep(0.05)


@pytest.mark.trio
async def test_subscribe_looks_symbols_up_as_the_start_does(autojump_clock: object) -> None:
    """A symbol went to the hub as a contract id: the hub refused it in a log line, no
    bar came, and ``ready()`` failed from then on (found by a hunt)."""
    config = msgspec.structs.replace(node_config(), contracts=[MNQ])
    async with sim_node(config=config) as h:
        await h.node.ready(timeout=120)
        with pytest.raises(ConfigError, match="unknown contract 'NOPE'"):
            await h.node.subscribe(["NOPE"])
        await h.node.subscribe(["ESZ5"], ["1min"])
        await h.node.ready(timeout=120)
        await anyio.sleep(90)
        assert (await h.node.bars(ES, "1min", 10)).height > 0
