"""The seeded market: deterministic, on the tick grid, at the asked rate, bounded."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from protocols import gateway as gw
from protocols.signalr import RECORD_SEPARATOR, Invocation
from pxnode.sim.book import DOM_ASK, DOM_BEST_ASK, DOM_BEST_BID, DOM_BID, LEVELS, SecondBars
from pxnode.sim.contracts import CONTRACTS, DEFAULT_CONTRACTS, contracts_for
from pxnode.sim.hubs import market_frame
from pxnode.sim.market import (
    BURST_CHUNK,
    DepthEmitted,
    MarketSim,
    QuoteEmitted,
    TradesEmitted,
    iso,
    parse_time,
)

START = 1_764_000_000.0
_INVOCATION = msgspec.json.Decoder(Invocation)


def fingerprint(events: Sequence[msgspec.Struct]) -> bytes:
    return msgspec.json.encode([msgspec.structs.asdict(e) for e in events])


def test_same_seed_same_events_however_finely_advanced() -> None:
    coarse = MarketSim(7, rate=300, start=START)
    fine = MarketSim(7, rate=300, start=START)
    a = coarse.advance(START + 10)
    b = [e for k in range(1, 1001) for e in fine.advance(START + k / 100)]
    assert a and fingerprint(a) == fingerprint(b)
    assert fingerprint(MarketSim(8, rate=300, start=START).advance(START + 10)) != fingerprint(a)


def test_a_market_skipped_ahead_never_emits_nor_records_what_was_due() -> None:
    sim = MarketSim(3, rate=1000, start=START)
    sim.advance(START + 1)
    sim.skip_to(START + 100)  # its driver fell 99 s behind wall time
    assert sim.next_at > START + 100 and sim.now == START + 100
    events = sim.advance(START + 101)
    trades = [t for e in events if isinstance(e, TradesEmitted) for t in e.trades]
    assert 0 < len(trades) < 2 * 1000  # one second of trades, not a hundred
    stamps = [t.ts for c in sim.contracts for t in sim.recent_trades(c.id, since=START + 1)]
    assert stamps and min(stamps) >= (START + 100) * 1e6  # nothing recorded in the gap
    sim.skip_to(START + 50)  # never back
    assert sim.now == START + 101


def test_rate_and_batches() -> None:
    sim = MarketSim(1, rate=1000, start=START)
    events = sim.advance(START + 20)
    trades = [e for e in events if isinstance(e, TradesEmitted)]
    total = sum(len(e.trades) for e in trades)
    assert 0.9 * 20_000 < total < 1.1 * 20_000
    assert sim.emitted == total
    assert any(len(e.trades) > 1 for e in trades)  # lists, not single items
    # every batch comes with a quote and a depth update of its contract
    kinds = [type(e) for e in events]
    assert kinds.count(QuoteEmitted) == kinds.count(DepthEmitted) == len(trades)


def test_prices_on_the_tick_grid_and_timestamps_in_order() -> None:
    sim = MarketSim(3, rate=2000, start=START)
    sim.advance(START + 5)
    for spec in DEFAULT_CONTRACTS:
        tape = sim.recent_trades(spec.id)
        assert tape, spec.id
        for trade in tape:
            ticks = trade.price / spec.tick_size
            assert abs(ticks - round(ticks)) < 1e-6
            assert repr(trade.price) == repr(round(trade.price, spec.decimals))
            assert trade.volume >= 1 and trade.side in (0, 1)
        stamps = [t.ts for t in tape]
        assert (
            stamps == sorted(stamps) and START * 1e6 <= stamps[0] <= stamps[-1] <= (START + 5) * 1e6
        )


def test_payloads_decode_strictly_as_the_gateway_schemas() -> None:
    sim = MarketSim(5, rate=500, start=START)
    for event in sim.advance(START + 2):
        frame = market_frame(event)
        assert frame.endswith(RECORD_SEPARATOR) and frame.count(RECORD_SEPARATOR) == 1
        call = _INVOCATION.decode(frame[:-1])
        if isinstance(event, TradesEmitted):
            contract, items = gw.TRADE_ARGS.decode(call.arguments)
            assert call.target == "GatewayTrade" and isinstance(items, list)
            assert all(i.symbol_id == CONTRACTS[contract].symbol_id for i in items)
            assert all(parse_time(i.timestamp) == event.ts for i in items)
            assert items[0].timestamp.endswith("+00:00")
        elif isinstance(event, QuoteEmitted):
            contract, quote = gw.QUOTE_ARGS.decode(call.arguments)
            assert call.target == "GatewayQuote"
            assert quote.best_bid is not None and quote.best_ask is not None
            assert quote.best_bid < quote.best_ask
            assert None not in msgspec.structs.astuple(quote)  # the sim sends full quotes
        else:
            contract, levels = gw.DEPTH_ARGS.decode(call.arguments)
            assert call.target == "GatewayDepth" and isinstance(levels, list)
            kinds = {level.type for level in levels}
            assert 5 in kinds and kinds <= set(range(1, 12))  # DomType, Reset only in snapshots
            assert {3, 4} <= kinds or {9, 10} <= kinds  # the touch, new or not
        assert contract == event.contract


def test_ground_truth_window_and_bound() -> None:
    sim = MarketSim(2, contracts_for(["CON.F.US.EP.Z25"]), rate=500, start=START, truth=100)
    sim.advance(START + 10)
    contract = "CON.F.US.EP.Z25"
    assert len(sim.recent_trades(contract)) == 100  # bounded
    window = sim.recent_trades(contract, since=START + 9.9, until=START + 9.95)
    assert window and all((START + 9.9) * 1e6 <= t.ts < (START + 9.95) * 1e6 for t in window)


def test_burst_is_n_trades_at_one_instant_in_capped_lists() -> None:
    sim = MarketSim(4, rate=10, start=START)
    sim.advance(START + 1)
    events = sim.burst(1234)
    lists = [e for e in events if isinstance(e, TradesEmitted)]
    assert sum(len(e.trades) for e in lists) == 1234
    assert max(len(e.trades) for e in lists) <= BURST_CHUNK
    assert len({e.ts for e in lists}) == 1


def test_quote_and_depth_snapshots() -> None:
    sim = MarketSim(4, rate=10, start=START)
    contract = "CON.F.US.GCE.G26"
    assert sim.depth(contract) == []
    first = sim.quote(contract)
    assert first.last_price == 4000.0 and first.best_bid == 3999.9
    sim.advance(START + 60)
    assert sim.quote(contract) is not first and sim.depth(contract)


def apply(book: dict[int, dict[float, int]], levels: list[gw.DepthItem]) -> None:
    """Depth items into a per-side price -> size book, the way the SDKs' order books do."""
    side_of = {DOM_ASK: DOM_ASK, DOM_BEST_ASK: DOM_ASK, DOM_BID: DOM_BID, DOM_BEST_BID: DOM_BID}
    for level in levels:
        side = side_of.get(level.type)
        if side is None:
            continue
        if level.volume == 0:
            book[side].pop(level.price, None)
        else:
            book[side][level.price] = level.volume


def test_depth_updates_keep_a_client_book_equal_to_the_sim_and_never_crossed() -> None:
    # project-x-py's OrderBook applies levels by price and deletes on volume 0; with
    # touch-only updates its book kept every price the touch ever visited and crossed.
    sim = MarketSim(7, rate=2000, start=START)
    contract = "CON.F.US.MNQ.Z25"
    sim.advance(START + 1)
    book: dict[int, dict[float, int]] = {DOM_ASK: {}, DOM_BID: {}}
    apply(book, sim.depth(contract))  # the subscribe snapshot
    moved = 0
    quote = sim.quote(contract)
    for event in sim.advance(START + 20):
        if isinstance(event, QuoteEmitted) and event.contract == contract:
            quote = event.quote  # each batch: trades, then its quote, then its depth
        elif isinstance(event, DepthEmitted) and event.contract == contract:
            apply(book, event.levels)
            bid, ask = max(book[DOM_BID]), min(book[DOM_ASK])
            assert bid < ask and (bid, ask) == (quote.best_bid, quote.best_ask)
            assert len(book[DOM_BID]) == len(book[DOM_ASK]) == LEVELS
            moved += any(level.volume == 0 for level in event.levels)
    assert moved > 50  # the touch walked, and levels left the book
    fresh: dict[int, dict[float, int]] = {DOM_ASK: {}, DOM_BID: {}}
    apply(fresh, sim.depth(contract))
    assert fresh == book


def test_depth_snapshot_is_the_whole_ladder_best_first() -> None:
    sim = MarketSim(3, rate=500, start=START)
    contract = "CON.F.US.EP.Z25"
    sim.advance(START + 5)
    items = sim.depth(contract)
    asks = [i.price for i in items if i.type == DOM_ASK]
    bids = [i.price for i in items if i.type == DOM_BID]
    assert len(asks) == len(bids) == LEVELS
    assert asks == sorted(asks, reverse=True) and bids == sorted(bids, reverse=True)
    assert asks[-1] - bids[0] == 0.25  # one tick apart at the touch
    assert [i.type for i in items[-2:]] == [DOM_BEST_BID, DOM_BEST_ASK]
    assert (items[0].type, items[0].price, items[0].volume) == (6, 0.0, 0)  # Reset first
    assert all(i.volume > 0 and i.current_volume == i.volume for i in items[1:])


def test_second_bars_keep_only_their_retention() -> None:
    bars = SecondBars(retention=10)
    for sec in range(100, 130):
        bars.add(sec, 1.0 + sec, 1)
        bars.add(sec, 0.5 + sec, 2)
    assert bars.first == 120 and list(bars.secs) == list(range(120, 130))
    i = bars.between(125, 127)
    assert list(i) == [5, 6]
    assert (bars.o[5], bars.h[5], bars.l[5], bars.c[5], bars.v[5]) == (
        126.0,
        126.0,
        125.5,
        125.5,
        3,
    )


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan")])
def test_bad_rate_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        MarketSim(1, rate=rate)


def test_bad_contracts_are_refused() -> None:
    with pytest.raises(ValueError, match="contract"):
        MarketSim(1, [])
    with pytest.raises(KeyError, match=r"CON\.F\.US\.NOPE"):
        contracts_for(["CON.F.US.NOPE"])


def test_iso_round_trips() -> None:
    assert iso(1_764_000_000_123_000) == "2025-11-24T16:00:00.123+00:00"
    assert parse_time("2025-11-24T16:00:00.123+00:00") == 1_764_000_000_123_000
    assert parse_time("2025-11-24T10:00:00-06:00") == 1_764_000_000_000_000
    assert parse_time("2025-11-24T16:00:00") == 1_764_000_000_000_000  # no offset: UTC
