"""Generate a realistic, seeded tape for the replay benchmarks.

Run: .venv/bin/python bench/gen_tape.py OUT.tape [--trades N] [--seed S] [--rate TPS]

The tape looks like a recording of the real market hub: GatewayTrade frames
with batched trade lists (1-20 items, mostly small), ISO timestamps with a
``+00:00`` offset, ``t`` = exchange time of the frame plus 1-30 ms of latency,
a GatewayQuote about every tenth frame, and rare bad input (a zero price, a
zero volume, an unparseable timestamp, a spike, a line that is not JSON), so
the rejecting paths are exercised too. Lines are written as they are made:
a 10M-trade tape needs no more memory than a 10-trade one.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

START = 1737469800  # 2025-01-21T14:30:00Z, US cash open
BAD_ITEM = 1e-4  # share of trade items with one bad field (or a spike)
BAD_LINE = 1e-5  # share of frames followed by a line that is not JSON
QUOTE_SHARE = 0.1  # share of trade frames followed by a quote


@dataclass(frozen=True, slots=True)
class Contract:
    id: str
    symbol: str
    tick: float
    price: float

    @property
    def digits(self) -> int:
        return max(0, -Decimal(str(self.tick)).as_tuple().exponent)  # type: ignore[operator]


CONTRACTS = (
    Contract("CON.F.US.MNQ.H25", "F.US.MNQ", 0.25, 21500.0),
    Contract("CON.F.US.MES.H25", "F.US.MES", 0.25, 6050.0),
    Contract("CON.F.US.MGC.G25", "F.US.MGC", 0.1, 2750.0),
    Contract("CON.F.US.M2K.H25", "F.US.M2K", 0.1, 2300.0),
    Contract("CON.F.US.MYM.H25", "F.US.MYM", 1.0, 43500.0),
    Contract("CON.F.US.MCL.H25", "F.US.MCL", 0.01, 75.0),
    Contract("CON.F.US.ENQ.H25", "F.US.ENQ", 0.25, 21500.0),
    Contract("CON.F.US.EP.H25", "F.US.EP", 0.25, 6050.0),
    Contract("CON.F.US.GCE.G25", "F.US.GCE", 0.1, 2750.0),
    Contract("CON.F.US.M6E.H25", "F.US.M6E", 0.0001, 1.04),
)


@dataclass(frozen=True, slots=True)
class TapeSummary:
    lines: int
    trades: int
    quotes: int
    bad_items: int
    bad_lines: int
    seconds: float  # tape time covered


class _Stamps:
    """ISO text of µs timestamps; the per-second head is formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._head = ""

    def __call__(self, us: int) -> str:
        second, frac = divmod(us, 1_000_000)
        if second != self._second:
            self._second = second
            self._head = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._head}.{frac:06d}+00:00"


def generate(
    path: str | Path,
    trades: int = 1_000_000,
    seed: int = 1,
    rate: float = 50.0,
    contracts: int = 4,
) -> TapeSummary:
    """Write a tape of ``trades`` trade items (about ``rate`` per second of tape time)."""
    if not 1 <= contracts <= len(CONTRACTS):
        raise ValueError(f"contracts must be 1..{len(CONTRACTS)}, got {contracts}")
    chosen = CONTRACTS[:contracts]
    rng = random.Random(seed)
    stamp = _Stamps()
    ticks = [round(c.price / c.tick) for c in chosen]
    digits = [c.digits for c in chosen]
    now_us = START * 1_000_000
    made = lines = quotes = bad_items = bad_lines = 0
    out: list[str] = []
    with open(path, "w", encoding="ascii", newline="\n") as tape:
        while made < trades:
            k = rng.randrange(len(chosen))
            contract = chosen[k]
            n = min(20, 1 + int(rng.expovariate(0.25)), trades - made)
            now_us += int(rng.expovariate(rate / n) * 1_000_000)
            items = []
            ts = now_us
            for _ in range(n):
                ticks[k] += rng.choice((-2, -1, -1, 0, 0, 0, 1, 1, 2))
                price = f"{ticks[k] * contract.tick:.{digits[k]}f}"
                volume = 1 + int(rng.expovariate(0.5))
                text = stamp(ts)
                if rng.random() < BAD_ITEM:
                    bad_items += 1
                    fault = rng.randrange(4)
                    if fault == 0:
                        price = "0"
                    elif fault == 1:
                        volume = 0
                    elif fault == 2:
                        text = "garbage"
                    else:
                        price = f"{ticks[k] * contract.tick * 3:.{digits[k]}f}"  # a spike
                items.append(
                    f'{{"symbolId":"{contract.symbol}","price":{price},"timestamp":"{text}",'
                    f'"type":{rng.randrange(2)},"volume":{volume}}}'
                )
                ts += rng.randrange(50)
            made += n
            t = (ts + rng.randrange(1_000, 30_000)) / 1_000_000
            out.append(
                f'{{"t":{t:.6f},"hub":"market","target":"GatewayTrade",'
                f'"arguments":["{contract.id}",[{",".join(items)}]]}}\n'
            )
            lines += 1
            if rng.random() < QUOTE_SHARE:
                ask = f"{ticks[k] * contract.tick:.{digits[k]}f}"
                bid = f"{(ticks[k] - 1) * contract.tick:.{digits[k]}f}"
                out.append(
                    f'{{"t":{t:.6f},"hub":"market","target":"GatewayQuote","arguments":'
                    f'["{contract.id}",{{"symbol":"{contract.symbol}","lastPrice":{ask},'
                    f'"bestBid":{bid},"bestAsk":{ask},"volume":{made},'
                    f'"lastUpdated":"{stamp(ts)}","timestamp":"{stamp(ts)}"}}]}}\n'
                )
                lines += 1
                quotes += 1
            if rng.random() < BAD_LINE:
                out.append('{"t": oops, this line is not JSON\n')
                lines += 1
                bad_lines += 1
            if len(out) >= 4096:
                tape.writelines(out)
                out.clear()
        tape.writelines(out)
    return TapeSummary(lines, made, quotes, bad_items, bad_lines, now_us / 1e6 - START)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=50.0, help="trades per second of tape time")
    parser.add_argument("--contracts", type=int, default=4, help=f"1..{len(CONTRACTS)}")
    args = parser.parse_args()
    started = time.perf_counter()
    summary = generate(args.out, args.trades, args.seed, args.rate, args.contracts)
    elapsed = time.perf_counter() - started
    print(
        f"{args.out}: {summary.trades:,} trades in {summary.lines:,} lines "
        f"({summary.quotes:,} quotes, {summary.bad_items} bad items, "
        f"{summary.bad_lines} bad lines), "
        f"{summary.seconds / 3600:.1f} h of tape, written in {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main()
