"""SignalR codec throughput on GatewayTrade frames, against a json.loads baseline.

    .venv/bin/python bench/codec.py [--frames N] [--repeat R] [--chunk BYTES] [--seed S]

(a) pxnode: ``SignalRConnection`` (client role, after the handshake) fed the stream
    in websocket-sized chunks, each Invocation's Raw arguments decoded with
    ``protocols.gateway.TRADE_ARGS`` into typed TradeItem Structs.
(b) baseline: the whole stream split on 0x1E, ``json.loads`` of every frame.
Both count frames and trade items, so each proves it saw everything. Best of R runs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocols.gateway import TRADE_ARGS, TradeItem
from protocols.signalr import (
    NEED_DATA,
    RECORD_SEPARATOR,
    HandshakeRequest,
    HandshakeResponse,
    Invocation,
    Role,
    SignalRConnection,
)

CONTRACTS = [("CON.F.US.MNQ.Z25", "F.US.MNQ", 21000.0), ("CON.F.US.EP.Z25", "F.US.EP", 6000.0)]


def build_stream(frames: int, seed: int) -> tuple[bytes, int]:
    """``frames`` GatewayTrade frames of 1-20 items each, as the gateway sends them."""
    rng = random.Random(seed)
    out = []
    trades = 0
    for n in range(frames):
        contract, symbol, base = CONTRACTS[n % len(CONTRACTS)]
        items = []
        for _ in range(rng.randint(1, 20)):
            ms = rng.randrange(86_400_000)
            stamp = (
                f"2025-01-21T{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}"
            )
            items.append(
                f'{{"symbolId":"{symbol}","price":{base + rng.randrange(400) * 0.25},'
                f'"timestamp":"{stamp}.{ms % 1000:03d}+00:00",'
                f'"type":{rng.randint(0, 1)},"volume":{rng.randint(1, 9)}}}'
            )
        trades += len(items)
        out.append(
            f'{{"type":1,"target":"GatewayTrade","arguments":["{contract}",[{",".join(items)}]]}}'
        )
    return ("\x1e".join(out) + "\x1e").encode(), trades


def opened_client() -> SignalRConnection:
    client = SignalRConnection(Role.CLIENT)
    client.send(HandshakeRequest())
    client.receive_data(b"{}\x1e")
    assert type(client.next_event()) is HandshakeResponse
    return client


def pxnode(chunks: list[bytes]) -> tuple[int, int]:
    client = opened_client()
    frames = trades = 0
    for chunk in chunks:
        client.receive_data(chunk)
        while (event := client.next_event()) is not NEED_DATA:
            if type(event) is Invocation and event.target == "GatewayTrade":
                _, items = TRADE_ARGS.decode(event.arguments)
                frames += 1
                trades += 1 if isinstance(items, TradeItem) else len(items)
    return frames, trades


def baseline(stream: bytes) -> tuple[int, int]:
    frames = trades = 0
    for frame in stream.split(RECORD_SEPARATOR):
        if frame:
            message = json.loads(frame)
            if message["type"] == 1 and message["target"] == "GatewayTrade":
                items = message["arguments"][1]
                frames += 1
                trades += len(items) if isinstance(items, list) else 1
    return frames, trades


def best(run: Callable[[], tuple[int, int]], repeat: int, expected: tuple[int, int]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        counts = run()
        times.append(time.perf_counter() - start)
        assert counts == expected, (counts, expected)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=16_384, help="websocket read size")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    stream, trades = build_stream(args.frames, args.seed)
    expected = (args.frames, trades)
    chunks = [stream[i : i + args.chunk] for i in range(0, len(stream), args.chunk)]
    per_frame = [frame + RECORD_SEPARATOR for frame in stream.split(RECORD_SEPARATOR)[:-1]]
    print(
        f"{args.frames:,} frames, {trades:,} trades, {len(stream) / 1e6:.1f} MB, "
        f"python {sys.version.split()[0]}, best of {args.repeat}"
    )

    results = {
        "baseline: split + json.loads": best(lambda: baseline(stream), args.repeat, expected),
        f"pxnode: codec + TRADE_ARGS, {args.chunk} B chunks": best(
            lambda: pxnode(chunks), args.repeat, expected
        ),
        "pxnode: codec + TRADE_ARGS, one frame per chunk": best(
            lambda: pxnode(per_frame), args.repeat, expected
        ),
    }
    base = results["baseline: split + json.loads"]
    for name, seconds in results.items():
        print(
            f"{name:<50} {args.frames / seconds:>12,.0f} frames/s {trades / seconds:>14,.0f} "
            f"trades/s  {base / seconds:5.2f}x baseline"
        )


if __name__ == "__main__":
    main()
