"""Memory of ``pxnode replay``: the peak RSS must stay flat in the tape's length.

Run: .venv/bin/python bench/rss.py [--trades 1000000,10000000] [--contracts K] [--tape PATH]

For each tape size, generates (streaming, never in memory) a tape of that many
trades over K contracts (default 10), or takes ``--tape``, then runs the whole
``pxnode replay TAPE --out bars.parquet --timeframes 1sec,1min,5min,15min``
process while sampling its RSS every 50 ms. Printed per tape: RSS shortly after
start, the peak (the kernel's high-water mark, not a sample), the last sample
(as the output is written), the RSS at each 10 % of the run, and the peak
against the smallest tape's peak (flat: ~1.0x).
The target is a peak under 100 MiB for every size.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from gen_tape import generate  # bench/ is sys.path[0] when run as a script

TIMEFRAMES = "1sec,1min,5min,15min"
MIB = 2**20
TARGET_MIB = 100.0


def sampled_replay(tape: Path, out: Path) -> tuple[float, list[float], float]:
    """Run ``pxnode replay`` on ``tape``; (seconds, RSS samples in MiB, peak RSS in MiB).

    The peak is the kernel's (``ru_maxrss`` of the child, from ``wait4``): exact,
    where the samples can miss a peak shorter than their 50 ms.
    """
    pxnode = Path(sys.executable).with_name("pxnode")
    command = [str(pxnode), "replay", str(tape), "--out", str(out), "--timeframes", TIMEFRAMES]
    started = time.perf_counter()
    child = subprocess.Popen(command)
    process = psutil.Process(child.pid)
    samples: list[float] = []
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        with contextlib.suppress(psutil.NoSuchProcess):
            samples.append(process.memory_info().rss / MIB)
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"pxnode replay exited {child.returncode}")
    return seconds, samples, usage.ru_maxrss * 1024 / MIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", default="1000000,10000000", help="comma-separated sizes")
    parser.add_argument("--contracts", type=int, default=10)
    parser.add_argument("--tape", type=Path, help="an existing tape (else one per size)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.trades.split(",")]
    peaks: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes if args.tape is None else [0]:
            tape = args.tape or Path(tmp) / f"{size}.tape"
            if args.tape is None:
                summary = generate(tape, size, seed=1, contracts=args.contracts)
                label = f"{summary.trades:,} trades, {summary.seconds / 3600:.0f} h of tape"
            else:
                label = str(tape)
            seconds, samples, peak = sampled_replay(tape, Path(tmp) / "bars.parquet")
            peaks.append(peak)
            tenths = " ".join(f"{samples[len(samples) * i // 10]:.0f}" for i in range(10))
            verdict = "ok" if peak < TARGET_MIB else f"OVER {TARGET_MIB:.0f} MiB"
            print(f"{label}: pxnode replay {seconds:.1f} s")
            start, end = samples[0], samples[-1]
            print(f"  RSS MiB start {start:.1f}  peak {peak:.1f}  end {end:.1f}  {verdict}")
            print(f"  RSS MiB at each 10 % of the run: {tenths}")
            print(f"  peak vs the first tape's peak: {peak / peaks[0]:.2f}x")


if __name__ == "__main__":
    main()
