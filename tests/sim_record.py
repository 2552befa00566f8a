"""Judging a node's bars against the sim's own record of what it traded (chaos soak, seams)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pxnode.sim import Fault
from pxnode.testing import SimNode


class Quiet:
    """The sim stops sending (a stall: trades it makes meanwhile never leave it), so
    what is in flight lands and the node's bars can be judged. ``sent`` holds each
    contract's trades from the whole second ``since`` up to the stall: truth takes
    those instead of the per-second record, which goes on with trades never sent."""

    def __init__(self, h: SimNode, seconds: float, contracts: Sequence[str]) -> None:
        self.since = int(h.wall()) - 60
        self.sent = {c: h.sim.sim.recent_trades(c, since=self.since) for c in contracts}
        h.sim.apply(Fault("stall", 0.0, seconds))


def truth(
    h: SimNode, contract: str, lo_us: int, hi_us: int, quiet: Quiet
) -> tuple[Any, ...] | None:
    """(open, high, low, close, volume) of what the sim traded in [lo, hi) and sent, or None."""
    start = int(h.sim.sim.start)
    lo, hi = lo_us // 1_000_000, hi_us // 1_000_000
    rows = list(h.sim.rest.synthetic.rows(contract, lo, min(hi, start)))
    seconds = h.sim.sim.seconds(contract)
    rows += [
        (seconds.secs[i], seconds.o[i], seconds.h[i], seconds.l[i], seconds.c[i], seconds.v[i])
        for i in seconds.between(max(lo, start), min(hi, quiet.since))
    ]
    rows += [
        (t.ts, t.price, t.price, t.price, t.price, t.volume)
        for t in quiet.sent[contract]
        if lo_us <= t.ts < hi_us
    ]
    if not rows:
        return None
    return (
        rows[0][1],
        max(r[2] for r in rows),
        min(r[3] for r in rows),
        rows[-1][4],
        sum(r[5] for r in rows),
    )
