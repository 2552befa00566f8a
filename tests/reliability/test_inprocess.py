"""Hostile input and faults against the sim, the metrics endpoint and the node, in one process.

Each test reproduces a way one request, connection or input could stop the sim or the
node (issue 12), through the same code path the command line runs.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import h11
import httpx
import msgspec
import pytest
import trio
import trio.testing

from protocols import gateway as gw
from protocols.errors import Escalation, TapeError
from protocols.messages import ChildRestarting, Flush, HubMessageReceived
from pxnode import metrics
from pxnode.metrics import serve_metrics
from pxnode.sim import GatewaySim, SimConfig, running
from pxnode.testing import EPOCH, MNQ, node_config, sim_node, socket_pair, until
from supervisors.config import BarsConfig, NodeConfig
from supervisors.node import open_node

NESTED = b"[" * 1000 + b"]" * 1000
DEEP_LOGIN = b'{"userName":"demo","apiKey":"x","z":' + NESTED + b"}"


# ------------------------------------------------------------------ the sim's REST


@pytest.mark.anyio
async def test_a_login_nested_1000_deep_is_a_400_and_the_sim_serves_on(anyio_backend: str) -> None:
    with anyio.fail_after(10):
        async with running(SimConfig()) as sim, httpx.AsyncClient(base_url=sim.url) as http:
            deep = await http.post(
                "/api/Auth/loginKey",
                content=DEEP_LOGIN,
                headers={"content-type": "application/json"},
            )
            assert deep.status_code == 400
            assert "nested too deeply" in deep.json()["errorMessage"]
            wrong = await http.post("/api/Auth/loginKey", json={"userName": 5, "apiKey": []})
            assert wrong.status_code == 400
            assert (await http.get("/api/Status/ping")).text == "pong"
            login = {"userName": "demo", "apiKey": "demo-api-key"}
            assert (await http.post("/api/Auth/loginKey", json=login)).json()["success"]


@pytest.mark.anyio
async def test_a_failing_rest_handler_is_a_counted_500_not_a_dead_listener(
    anyio_backend: str,
) -> None:
    def broken(request: Any, claims: Any) -> gw.RestResponse:
        raise TypeError("a handler bug")

    with anyio.fail_after(10):
        async with running(SimConfig()) as sim, httpx.AsyncClient(base_url=sim.url) as http:
            route = sim.rest._routes["Auth/loginKey"]
            sim.rest._routes["Auth/loginKey"] = (route[0], broken, route[2])
            login = {"userName": "demo", "apiKey": "demo-api-key"}
            failed = await http.post("/api/Auth/loginKey", json=login)
            assert failed.status_code == 500 and sim.rest.errors == 1
            assert (await http.get("/api/Status/ping")).text == "pong"


@pytest.mark.anyio
async def test_a_raising_connection_handler_ends_only_its_connection(anyio_backend: str) -> None:
    with anyio.fail_after(10):
        async with running(SimConfig()) as sim, httpx.AsyncClient(base_url=sim.url) as http:
            real = sim._http

            async def exploding(stream: anyio.abc.ByteStream) -> None:
                sim._http = real  # type: ignore[method-assign]  # only the first one fails
                raise RuntimeError("a bug in the connection code")

            sim._http = exploding  # type: ignore[method-assign]
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get("/api/Status/ping")
            assert sim.counters["handler_errors"] == 1
            assert (await http.get("/api/Status/ping")).text == "pong"


@pytest.mark.trio
async def test_an_idle_http_connection_is_closed_after_http_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = GatewaySim(SimConfig(http_timeout=30.0), wall_time=lambda: EPOCH + trio.current_time())
    async with anyio.create_task_group() as tg:
        await tg.start(sim.run)
        client, server = socket_pair()
        tg.start_soon(sim.handle, server)
        started = trio.current_time()
        async with client:
            with pytest.raises(anyio.EndOfStream):
                await client.receive()  # the sim closes it: EOF
        assert trio.current_time() - started == pytest.approx(30.0)
        assert sim.counters["http_timeouts"] == 1
        # A trickling request gets no more time than an idle connection.
        client, server = socket_pair()
        tg.start_soon(sim.handle, server)
        started = trio.current_time()
        async with client:
            await client.send(b"POST /api/Status/ping HTTP/1.1\r\n")
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                while True:
                    with anyio.move_on_after(10):
                        await client.receive()
                    await client.send(b"x-slow: 1\r\n")
        assert trio.current_time() - started == pytest.approx(30.0)
        assert sim.counters["http_timeouts"] == 2
        tg.cancel_scope.cancel()


# ---------------------------------------------------------------- the metrics endpoint


async def _scrape(port: int) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        return await client.get("/metrics")


@pytest.mark.anyio
async def test_garbage_on_the_metrics_port_gets_a_400_and_the_node_lives(
    anyio_backend: str,
) -> None:
    counters: Counter[str] = Counter()
    with anyio.fail_after(10):
        async with (
            open_node(NodeConfig(tick_interval=0.05)) as node,
            anyio.create_task_group() as tg,
        ):
            port = await tg.start(lambda **kw: serve_metrics(node, 0, counters=counters, **kw))
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"\x00\xffgarbage\r\n\r\n")
                answer = await stream.receive()
            assert answer.startswith(b"HTTP/1.1 400")
            assert counters["requests_malformed"] == 1
            assert (await _scrape(port)).status_code == 200
            await node.stats()  # the node still answers
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_scrapers_that_reset_never_take_the_node_down(anyio_backend: str) -> None:
    counters: Counter[str] = Counter()
    linger = struct.pack("ii", 1, 0)  # close = RST, as a scrape timeout does
    with anyio.fail_after(20):
        async with (
            open_node(NodeConfig(tick_interval=0.05)) as node,
            anyio.create_task_group() as tg,
        ):
            port = await tg.start(lambda **kw: serve_metrics(node, 0, counters=counters, **kw))
            for _ in range(30):
                stream = await anyio.connect_tcp("127.0.0.1", port)
                raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                await stream.send(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
                await stream.aclose()
            await anyio.sleep(0.3)
            assert (await _scrape(port)).status_code == 200
            assert counters["handler_errors"] == 0
            await node.stats()
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_failing_metrics_endpoint_ends_itself_not_the_node(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug in the accept loop")

    monkeypatch.setattr(metrics, "serve", broken)
    counters: Counter[str] = Counter()
    with anyio.fail_after(10):
        async with (
            open_node(NodeConfig(tick_interval=0.05)) as node,
            anyio.create_task_group() as tg,
        ):
            await tg.start(lambda **kw: metrics.serve_metrics(node, 0, counters=counters, **kw))
            await anyio.sleep(0.2)
            assert counters["endpoint_failures"] == 1
            await node.stats()  # the node runs on
            tg.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_silent_scraper_is_dropped_after_the_request_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from pxnode.metrics import REQUEST_TIMEOUT, _answer

    counters: Counter[str] = Counter()
    client, server = socket_pair()
    async with client, server:
        await _answer(None, server, counters)  # type: ignore[arg-type]
    assert counters["request_timeouts"] == 1
    assert trio.current_time() == pytest.approx(REQUEST_TIMEOUT)


@pytest.mark.trio
async def test_a_scraper_that_never_reads_its_answer_is_let_go(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Its task (and socket) was held for as long as it kept the connection open."""
    from pxnode.metrics import REQUEST_TIMEOUT, _send

    counters: Counter[str] = Counter()
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
    assert isinstance(conn.next_event(), h11.Request)
    client, server = socket_pair(0)  # nothing buffered: the send waits for a read
    async with client, server:
        await _send(conn, server, counters, 200, b"x" * 100, b"text/plain")
    assert counters["answer_timeouts"] == 1
    assert trio.current_time() == pytest.approx(REQUEST_TIMEOUT)


# ------------------------------------------------------------------------ the recorder


def _trade_message(t: float) -> HubMessageReceived:
    items = b'[{"symbolId":"F.US.MNQ","price":100.0,"timestamp":"2025-01-06T15:00:10Z","volume":1}]'
    return HubMessageReceived(
        "market", "GatewayTrade", msgspec.Raw(b'["' + MNQ.encode() + b'",' + items + b"]"), t
    )


@pytest.mark.trio
async def test_the_clock_flushes_the_tape_while_the_node_runs(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """``kill -9`` keeps what was accepted: the tape is flushed every tick, not only at exit."""
    tape = tmp_path / "t.jsonl"
    config = msgspec.structs.replace(node_config(), record=str(tape))
    async with sim_node(config=config) as h:
        await until(lambda: h.sim.counters["market_connections"] > 0)
        await trio.sleep(6)
        on_disk = tape.read_bytes().count(b"\n")  # read while the node still runs
        assert on_disk > 100
        assert b"GatewayTrade" in tape.read_bytes()


@pytest.mark.anyio
async def test_a_tape_on_a_full_disk_stops_the_node_with_the_tape_error(anyio_backend: str) -> None:
    with pytest.raises(Escalation) as caught:
        async with open_node(NodeConfig(record="/dev/full", tick_interval=0.05)) as node:
            await node.topic("topic.raw").tell(_trade_message(1.0))
            await anyio.sleep(5)  # the first tick's flush fails; the node does not wait for us
    assert isinstance(caught.value.__cause__, TapeError)
    assert str(caught.value.__cause__) == "cannot write tape '/dev/full': No space left on device"


@pytest.mark.anyio
async def test_the_final_flush_failing_is_still_the_nodes_error(anyio_backend: str) -> None:
    """No clock: the only flush is the one at exit, after the supervisor stopped acting on exits."""
    with pytest.raises(Escalation) as caught:
        async with open_node(NodeConfig(record="/dev/full", tick_interval=0)) as node:
            await node.topic("topic.raw").tell(_trade_message(1.0))
    assert isinstance(caught.value.__cause__, TapeError)
    assert "'recorder' failed: cannot write tape '/dev/full'" in str(caught.value)


@pytest.mark.anyio
async def test_a_tape_in_a_missing_directory_is_fatal_at_once(
    anyio_backend: str, tmp_path: Path
) -> None:
    events: list[Any] = []
    with pytest.raises(Escalation) as caught:
        async with open_node(NodeConfig(record=str(tmp_path / "no" / "t.jsonl"))) as node:
            with node.stream_events(capacity=4096) as stream:
                with anyio.fail_after(5):
                    async for event in stream:
                        events.append(event)
    assert isinstance(caught.value.__cause__, TapeError)
    assert "cannot open tape" in str(caught.value.__cause__)
    assert not [e for e in events if isinstance(e, ChildRestarting)]  # no 10 restarts first


# ------------------------------------------------------------------ volumes past int64

BIG = 2**62  # three of them sum past 2**63 - 1


def _big_trades() -> HubMessageReceived:
    items = b",".join(
        b'{"symbolId":"F.US.MNQ","price":100.0,"timestamp":"2025-01-06T15:00:1%dZ","type":0,'
        b'"volume":%d}' % (k, BIG)
        for k in range(3)
    )
    arguments = b'["' + MNQ.encode() + b'",[' + items + b"]]"
    return HubMessageReceived("market", "GatewayTrade", msgspec.Raw(arguments), 1736175615.0)


@pytest.mark.anyio
async def test_volumes_summing_past_int64_saturate_and_the_bars_actor_lives(
    anyio_backend: str,
) -> None:
    config = NodeConfig(tick_interval=0, bars=BarsConfig(timeframes=["1min", "1hr"]))
    async with open_node(config) as node:
        await node.ref("validation").tell(_big_trades())
        await node.ref("validation").ask(Flush(), 5.0)
        await node.ref("bars").ask(Flush(), 5.0)
        frame = await node.bars(MNQ, "1min", 10)
        counters = await node.ref("bars").ask(Flush(), 5.0)
    assert frame["volume"].to_list() == [2**63 - 1]
    assert frame["trades"].to_list() == [3]
    assert counters["volume_saturated"] >= 2  # one per timeframe
