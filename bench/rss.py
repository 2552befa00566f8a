"""Memory over a long replay: RSS must stay flat (bounded rings, mailboxes and stats).

Run: .venv/bin/python bench/rss.py [--trades N] [--contracts K] [--tape PATH] [--backend B]

Generates (streaming, never in memory) a tape of N trades (default 10,000,000)
over K contracts (default 10), then replays it through the real actors on
4 timeframes while a sampler task in the same task group reads the RSS every
half second. Printed: RSS before the replay, at each 10 % of the samples, the
peak and the end, with ratios against the start. The writer's output (one Bar
per bar of the tape) is the only thing meant to grow, and it is reported too.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import anyio
import psutil
from gen_tape import generate  # bench/ is sys.path[0] when run as a script

from pxnode.replay import ReplayResult, replay

TIMEFRAMES = ["1min", "5min", "1hr", "4hr"]
MIB = 2**20


async def replay_sampled(tape: Path, samples: list[float]) -> ReplayResult:
    process = psutil.Process()
    result: list[ReplayResult] = []

    async def run() -> None:
        result.append(await replay(tape, TIMEFRAMES))
        tg.cancel_scope.cancel()

    async def sample() -> None:
        while True:
            samples.append(process.memory_info().rss / MIB)
            await anyio.sleep(0.5)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sample)
        tg.start_soon(run)
    return result[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=10_000_000)
    parser.add_argument("--contracts", type=int, default=10)
    parser.add_argument("--tape", type=Path, help="an existing tape (else one is generated)")
    parser.add_argument("--backend", choices=("trio", "asyncio"), default="trio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tape = args.tape
        if tape is None:
            tape = Path(tmp) / "rss.tape"
            started = time.perf_counter()
            summary = generate(tape, args.trades, seed=1, contracts=args.contracts)
            print(
                f"tape: {summary.trades:,} trades, {args.contracts} contracts, "
                f"{tape.stat().st_size / MIB:,.0f} MiB, {summary.seconds / 3600:.0f} h of tape "
                f"(generated in {time.perf_counter() - started:.0f} s)"
            )
        start_rss = psutil.Process().memory_info().rss / MIB
        samples: list[float] = []
        started = time.perf_counter()
        result = anyio.run(replay_sampled, tape, samples, backend=args.backend)
        seconds = time.perf_counter() - started
    end_rss = psutil.Process().memory_info().rss / MIB
    peak_rss = max([*samples, end_rss])
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    stats = result.stats
    judged = stats.trades_accepted + sum(stats.trades_rejected.values())
    print(f"replay: {judged:,} trades in {seconds:.1f} s ({judged / seconds:,.0f} trades/s)")
    print(f"bars written: {stats.bars:,} (the output, held until written)")
    tenths = [f"{samples[len(samples) * i // 10]:.0f}" for i in range(10)]
    print(f"RSS MiB at each 10 % of the run: {' '.join(tenths)}")
    print(f"RSS MiB start {start_rss:.1f}  peak {peak_rss:.1f}  end {end_rss:.1f}")
    print(f"ratios vs start: peak {peak_rss / start_rss:.2f}x  end {end_rss / start_rss:.2f}x")
    print(f"ru_maxrss (whole process, incl. generation) {max_rss:.1f} MiB")


if __name__ == "__main__":
    main()
