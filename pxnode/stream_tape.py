"""A stream's trades as a temporary tape, so ``replay --nats`` is a tape replay.

The stream holds each accepted trade with the time the ingest node received it;
consecutive trades received together become the ``GatewayTrade`` line they
came in, with ``t`` = that time. Replaying the result through the node's
actors gives exactly the bars a tape replay of the same trades gives.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from actors.nats_bridge import NatsConfig, read_stream, trade_frames
from actors.tape import encode_line
from protocols.errors import ConfigError


@asynccontextmanager
async def stream_tape(
    config: NatsConfig, contracts: Sequence[str], since: datetime, until: datetime | None
) -> AsyncIterator[Path]:
    """A tape of the stream's trades received in [since, until), deleted afterwards;
    ``ConfigError`` for a contract of ``contracts`` with no trade there (as a tape's
    replay says of a contract the tape has no frame of)."""
    unseen = set(contracts)
    with tempfile.TemporaryDirectory(prefix="pxnode-stream-") as folder:
        path = Path(folder) / "stream.jsonl"
        with path.open("wb") as tape:
            async for trades in read_stream(config, contracts, since, until):
                unseen.difference_update(trade.contract for trade in trades)
                for frame in trade_frames(trades):
                    line = encode_line(frame)
                    if line is not None:
                        tape.write(line)
        if unseen:
            raise ConfigError(
                f"unknown contract {min(unseen)!r}: the stream has no trade of it in the window"
            )
        yield path
