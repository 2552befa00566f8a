"""The NATS bridge and source actors against a real nats-server (JetStream, loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
import nats
import pytest
import trio
from nats.js.api import AckPolicy, ConsumerConfig

from actors.nats_bridge import (
    Cursor,
    DurableInUse,
    NatsBridge,
    NatsConfig,
    NatsSource,
    NatsUnavailable,
    Outbox,
    claim,
    claim_subject,
    read_stream,
    require_asyncio,
    trade_frames,
)
from protocols.errors import ConfigError
from protocols.gateway import TRADE_ARGS
from protocols.messages import (
    Bar,
    BarClosed,
    BarUpdated,
    CountersReported,
    HubMessagesReceived,
    QuoteAccepted,
    QuotesAccepted,
    Trade,
    TradesAccepted,
)
from protocols.stream import DECODER, StreamBar, StreamTrade, stream_trade
from pxnode.testing import FakeContext, MemoryInbox, NatsServer, RecordingRef
from supervisors.supervisor import unwrap
from tests.nats_stream import publish, this_minute, trades_at

MNQ, ES = "CON.F.US.MNQ.Z25", "CON.F.US.EP.Z25"
T0 = 1_764_000_000_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py is asyncio only


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with NatsServer() as running:
        yield running


_streams = iter(range(1_000_000))


@pytest.fixture
def config(server: NatsServer) -> NatsConfig:
    """A stream of its own per test, on the module's server."""
    n = next(_streams)
    return NatsConfig(url=server.url, stream=f"T{n}", subjects=[f"t{n}.>"], window=7)


def trades(n: int, contract: str = MNQ, received_at: float = 1_764_000_000.0) -> list[Trade]:
    return [
        Trade(contract, T0 + i, 21000.0 + i % 4, 1 + i % 3, i % 2, received_at) for i in range(n)
    ]


class Answering(RecordingRef):
    """A validation stand-in that answers the source's Flush barrier."""

    async def ask(self, msg: Any, timeout: float) -> Any:
        return {}


async def stored(config: NatsConfig, subject: str = ">") -> list[Any]:
    """Every payload of the test's stream, in stream order."""
    client = await nats.connect(config.url)
    try:
        js = client.jetstream()
        info = await js.stream_info(config.stream)
        total = info.state.messages
        sub = await js.pull_subscribe(
            subject, stream=config.stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
        )
        out: list[Any] = []
        while len(out) < total:
            out += [DECODER.decode(m.data) for m in await sub.fetch(total - len(out), timeout=5)]
        return out
    finally:
        await client.close()


def prefixed(config: NatsConfig, bridge: Outbox) -> None:
    """The test streams use their own subject prefix instead of ``px``."""
    prefix = config.subjects[0].removesuffix(".>")
    bridge.pending = type(bridge.pending)(
        (prefix + s[2:] if s.startswith("px.") else s, d, i) for s, d, i in bridge.pending
    )


async def run_bridge(config: NatsConfig, outbox: Outbox, *messages: Any) -> FakeContext:
    """One incarnation of the bridge over ``messages``, until its inbox ends."""
    inbox, ctx = MemoryInbox(), FakeContext("nats_bridge", [RecordingRef("stats")])
    for msg in messages:
        outbox.add(msg)
    prefixed(config, outbox)
    inbox.close_sending()
    try:
        await NatsBridge(config, outbox).run(inbox, ctx)
    finally:
        inbox.close()
    return ctx


# ------------------------------------------------------------------ outbox ids


def test_ids_are_content_derived_and_tell_identical_trades_in_a_frame_apart() -> None:
    first, again = Outbox(), Outbox()
    twins = [Trade(MNQ, T0, 1.0, 1, 0, 5.0)] * 2
    first.add(TradesAccepted(twins))
    again.add(TradesAccepted(twins))
    ids = [entry[2] for entry in first.pending]
    assert len(set(ids)) == 2, "two equal trades of one frame are two messages"
    assert ids == [entry[2] for entry in again.pending], "the same trades get the same ids"
    later = Outbox()
    later.add(TradesAccepted([Trade(MNQ, T0, 1.0, 1, 0, 6.0)]))
    assert later.pending[0][2] not in ids, "the same trade in another frame is another message"


def test_a_quote_told_between_two_trade_messages_of_one_frame_time_resets_no_ordinal() -> None:
    """Validation tells a batch's trades before its quotes, so a quote received earlier can
    come between two trade messages of one receive time: the second trade kept ordinal 0,
    the first trade's id, and JetStream dropped it as a duplicate (a tape fed node lost
    one trade per batch)."""
    trade = Trade(MNQ, T0, 1.0, 1, 0, 5.0)
    outbox = Outbox()
    outbox.add(TradesAccepted([trade]))
    outbox.add(QuotesAccepted([QuoteAccepted(MNQ, T0 - 100_000, 4.9, bid=1.0)]))
    outbox.add(TradesAccepted([trade]))
    ids = [msg_id for subject, _, msg_id in outbox.pending if subject.startswith("px.trade.")]
    assert len(set(ids)) == 2


def test_a_sources_counters_outlive_its_incarnations() -> None:
    """Cumulative like every counter of the node: a restarted source counted from 0, and a
    scraper's ``_total`` went back."""
    cursor = Cursor()
    NatsSource(NatsConfig(), [MNQ], cursor, ["1min"], 0.25, 60.0).counters["received"] += 10
    assert NatsSource(NatsConfig(), [MNQ], cursor, ["1min"], 0.25, 60.0).counters["received"] == 10


def test_bar_events_name_their_kind_and_other_messages_are_counted() -> None:
    outbox = Outbox()
    bar = Bar(MNQ, "1min", T0, 1.0, 2.0, 0.5, 1.5, 10, 4)
    outbox.add(BarUpdated(bar))
    outbox.add(BarUpdated(bar, closed=True))
    outbox.add(BarClosed(bar))
    outbox.add("not a stream message")
    events = [msgspec.json.decode(data, type=StreamBar).event for _, data, _ in outbox.pending]
    assert events == ["updated", "corrected", "closed"]
    assert outbox.pending[0][0] == "px.bar.1min.CON.F.US.MNQ.Z25"
    assert outbox.counters["ignored"] == 1


def test_config_refuses_what_nats_cannot_take() -> None:
    for bad in (
        {"url": "http://x"},
        {"stream": "a.b"},
        {"durable": "x y"},
        {"window": 0},
        {"max_age": float("nan")},
        {"ack_timeout": 0.0},
    ):
        with pytest.raises(ConfigError):
            NatsConfig(**bad)


def test_trio_is_refused_with_a_clear_error() -> None:
    async def main() -> None:
        require_asyncio()

    with pytest.raises(ConfigError, match="asyncio only"):
        trio.run(main)


# ----------------------------------------------------------------- publishing


@pytest.mark.anyio
async def test_bridge_publishes_every_trade_in_order_with_acks_in_windows(
    config: NatsConfig,
) -> None:
    batch = trades(40)
    outbox = Outbox()
    ctx = await run_bridge(config, outbox, TradesAccepted(batch[:25]), TradesAccepted(batch[25:]))
    assert await stored(config) == [stream_trade(t) for t in batch]
    assert len(outbox) == 0
    assert outbox.counters["acked"] == 40 and outbox.counters["windows"] == 6  # 7 per window
    report = ctx.told("stats")[-1]
    assert isinstance(report, CountersReported) and report.counters["acked"] == 40


@pytest.mark.anyio
async def test_a_repeated_publish_is_stored_once(config: NatsConfig) -> None:
    batch = TradesAccepted(trades(10))
    await run_bridge(config, Outbox(), batch)
    again = Outbox()
    await run_bridge(config, again, batch)  # a restarted node republishing the same trades
    assert len(await stored(config)) == 10
    assert again.counters["stored_before"] == 10 and again.counters["published"] == 0


@pytest.mark.anyio
async def test_an_outbox_republished_after_the_duplicate_window_is_not_stored_twice(
    config: NatsConfig,
) -> None:
    """JetStream forgets ids after ``duplicate_window`` (120 s by default) while the
    breaker retries for about 17 minutes: a window stored but whose acks the outage
    swallowed was stored again, and every consumer counted its trades twice. Scaled
    down: a 1 s window, re-published 1.5 s later, the last 4 of 10 never stored."""
    config = msgspec.structs.replace(config, duplicate_window=1.0)
    batch = trades(10) + trades(3, ES)
    await run_bridge(config, Outbox(), TradesAccepted(batch[:6]))  # stored, acks lost
    await anyio.sleep(1.5)  # the outage and the breaker's cool-down outlast the window
    outbox = Outbox()
    await run_bridge(config, outbox, TradesAccepted(batch))  # the next incarnation
    assert await stored(config) == [stream_trade(t) for t in batch]
    assert outbox.counters["stored_before"] == 6 and outbox.counters["published"] == 7


@pytest.mark.anyio
async def test_nothing_leaves_the_outbox_while_nats_is_away(server: NatsServer) -> None:
    config = NatsConfig(url="nats://127.0.0.1:9", stream="away", connect_timeout=0.5)
    outbox = Outbox()
    with pytest.raises(NatsUnavailable, match="cannot reach NATS"):
        await run_bridge(config, outbox, TradesAccepted(trades(5)))
    assert len(outbox) == 5
    later = msgspec.structs.replace(config, url=server.url, subjects=["away.>"])
    await run_bridge(later, outbox)  # the next incarnation publishes what was left
    assert [t.price for t in await stored(later)] == [t.price for t in trades(5)]
    assert outbox.counters["republished"] == 5


@pytest.mark.anyio
async def test_a_server_restart_mid_stream_fails_the_incarnation_and_loses_nothing(
    tmp_path: Any,
) -> None:
    with NatsServer(store=str(tmp_path)) as own:
        config = NatsConfig(url=own.url, stream="restart", subjects=["restart.>"], window=50)
        outbox = Outbox()
        await run_bridge(config, outbox, TradesAccepted(trades(100)))
        inbox, ctx = MemoryInbox(), FakeContext("nats_bridge", [RecordingRef("stats")])
        with pytest.raises(BaseExceptionGroup) as caught:
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(NatsBridge(config, outbox).run, inbox, ctx)
                    await anyio.sleep(0.3)
                    own.stop()
                    await anyio.sleep(5)
            finally:
                inbox.close()
        assert isinstance(unwrap(caught.value), NatsUnavailable)
        own.start()
        outbox.add(TradesAccepted(trades(100, received_at=1_764_000_001.0)))
        for _ in range(50):  # as the supervisor would: JetStream needs a moment after a start
            try:
                await run_bridge(config, outbox)
                break
            except Exception:  # any failure of an incarnation is retried
                await anyio.sleep(0.1)
        assert len(await stored(config)) == 200
        assert outbox.counters["acked"] == 200 + outbox.counters["duplicates"]


# ------------------------------------------------------------------ consuming


def test_trade_frames_rebuild_the_frames_validation_judged() -> None:
    stream = [stream_trade(t) for t in trades(3) + trades(2, ES) + trades(1, received_at=9.0)]
    frames = trade_frames(stream)
    assert [(f.received_at, TRADE_ARGS.decode(f.arguments)[0]) for f in frames] == [
        (1_764_000_000.0, MNQ),
        (1_764_000_000.0, ES),
        (9.0, MNQ),
    ]
    items = TRADE_ARGS.decode(frames[0].arguments)[1]
    assert isinstance(items, list)
    assert [(i.price, i.volume, i.type) for i in items] == [
        (t.price, t.volume, t.side) for t in trades(3)
    ]


async def consume(config: NatsConfig, until: int, cursor: Cursor) -> list[StreamTrade]:
    """Run a source until it passed ``until`` trades on, then stop it through its inbox."""
    validation = Answering("validation")
    inbox = MemoryInbox()
    ctx = FakeContext("nats_source", [validation, RecordingRef("bars"), RecordingRef("stats")])
    source = NatsSource(config, [MNQ], cursor, ["1min"], 0.25, 60.0)
    source.subjects = [
        s.replace("px", config.subjects[0].removesuffix(".>"), 1) for s in source.subjects
    ]
    seen: list[StreamTrade] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run, inbox, ctx)
        with anyio.fail_after(10):
            while len(seen) < until:
                await validation.wait_for(len(validation.told) + 1)
                seen = [
                    StreamTrade(MNQ, "", i.price, i.volume, i.type, f.received_at)
                    for msg in validation.of(HubMessagesReceived)
                    for f in msg.messages
                    for i in TRADE_ARGS.decode(f.arguments)[1]  # type: ignore[union-attr]
                ]
        inbox.close_sending()
    inbox.close()
    return seen


async def answered(client: Any, subject: str) -> bool:
    try:
        await client.request(subject, b"", timeout=0.5)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return False
    return True


@pytest.mark.anyio
async def test_of_claimants_starting_together_exactly_one_holds_the_durable(
    config: NatsConfig,
) -> None:
    """Asking first and answering after would let two starts within one round trip both
    pass (replicas of one deployment): each subscribes before it asks, so they hear of
    each other and the older ticket wins on both sides."""
    clients = [await nats.connect(config.url) for _ in range(4)]
    try:
        outcomes: dict[int, str] = {}

        async def start(k: int) -> None:
            try:
                await claim(clients[k], config)
            except DurableInUse as exc:
                outcomes[k] = str(exc)
            else:
                outcomes[k] = "holds"

        async with anyio.create_task_group() as tg:
            for k in range(3):
                tg.start_soon(start, k)
        (winner,) = [k for k, outcome in outcomes.items() if outcome == "holds"]
        losers = [outcome for k, outcome in outcomes.items() if k != winner]
        assert len(losers) == 2 and all("in use by another consumer (pid " in o for o in losers)
        holder = clients[winner]
        with pytest.raises(DurableInUse):  # a later start meets the holder
            await claim(clients[3], config)
        await holder.close()  # a holder that is gone holds nothing, once the server knows
        with anyio.fail_after(10):
            while await answered(clients[3], claim_subject(config)):  # noqa: ASYNC110
                await anyio.sleep(0.05)
        await claim(clients[3], config)
    finally:
        for client in clients:
            await client.close()


@pytest.mark.anyio
async def test_a_durable_consumer_resumes_where_it_stopped(config: NatsConfig) -> None:
    config = msgspec.structs.replace(config, fetch=10)
    first, second = trades(30), trades(20, received_at=1_764_000_001.0)
    await run_bridge(config, Outbox(), TradesAccepted(first))
    seen = await consume(config, 30, Cursor())
    await run_bridge(config, Outbox(), TradesAccepted(second))
    seen += await consume(config, 20, Cursor())  # a new process: only the durable remembers
    assert [(t.price, t.volume, t.received_at) for t in seen] == [
        (t.price, t.volume, t.received_at) for t in first + second
    ]


@pytest.mark.anyio
async def test_reading_a_stream_a_live_node_publishes_to_ends_where_it_ended_at_the_start() -> None:
    """``replay --nats`` read until nothing was pending: a node publishing faster than
    the reader kept it reading for ever, past ``--until``."""
    with NatsServer() as own:
        first, later = trades_at(this_minute(), [1.0] * 10), trades_at(this_minute(), [2.0] * 10)
        await publish(own.url, first)
        config = NatsConfig(url=own.url, fetch=3)
        seen: list[StreamTrade] = []
        async for batch in read_stream(config, [], datetime(2000, 1, 1, tzinfo=UTC), None):
            if not seen:
                await publish(own.url, later)  # the live node goes on
            seen += batch
    assert seen == first


@pytest.mark.anyio
async def test_what_the_stream_stored_leaves_the_outbox_by_position_less_the_refused() -> None:
    """A message the server answered with an error was never stored, though later ones
    of its window were: it stays. A bar event's id can repeat (its payload alone): the
    one after the stored one stays too."""
    bar = "px.bar.1min.X"
    outbox = Outbox()
    outbox.pending.extend([("px.trade.X", b"a", "a"), ("px.trade.X", b"b", "b"),
                           ("px.trade.X", b"c", "c"), ("px.trade.X", b"d", "d"),
                           (bar, b"h", "h"), (bar, b"u", "u"), (bar, b"h", "h")])  # fmt: skip
    outbox.refused.add("b")

    class Stored:
        def __init__(self, msg_id: str) -> None:
            self.headers = {"Nats-Msg-Id": msg_id}

    class LastOnSubject:
        async def get_msg(self, stream: str, subject: str) -> Stored:
            return Stored({"px.trade.X": "c", bar: "h"}[subject])

    await NatsBridge(NatsConfig(), outbox)._drop_stored(LastOnSubject())
    assert [entry[2] for entry in outbox.pending] == ["b", "d", "u", "h"]
    assert outbox.counters["stored_before"] == 3


@pytest.mark.anyio
async def test_a_window_remembers_which_of_its_messages_the_server_refused() -> None:
    import asyncio

    from nats.js.errors import ServiceUnavailableError

    class Ack:
        duplicate = False

    class Answering:
        async def publish_async(self, subject: str, data: bytes, headers: Any) -> Any:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if data == b"b":
                future.set_exception(ServiceUnavailableError())
            else:
                future.set_result(Ack())
            return future

    outbox = Outbox()
    outbox.pending.extend([("px.trade.X", data, data.decode()) for data in (b"a", b"b", b"c")])
    with pytest.raises(ServiceUnavailableError):
        await NatsBridge(NatsConfig(), outbox)._publish(Answering(), RecordingRef("stats"))
    assert outbox.refused == {"b"} and len(outbox) == 3
