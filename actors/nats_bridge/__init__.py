"""The node's NATS JetStream edge: the bridge publishes the validated stream, the
source feeds a consuming node from it (nats-py, asyncio only)."""

from .bridge import COUNTERS as COUNTERS
from .bridge import NatsBridge as NatsBridge
from .bridge import Outbox as Outbox
from .bus import DurableInUse as DurableInUse
from .bus import NatsUnavailable as NatsUnavailable
from .bus import require_asyncio as require_asyncio
from .claim import claim as claim
from .claim import claim_subject as claim_subject
from .config import NatsConfig as NatsConfig
from .reading import read_stream as read_stream
from .reading import trade_frames as trade_frames
from .source import Cursor as Cursor
from .source import NatsSource as NatsSource

__all__ = [
    "COUNTERS",
    "Cursor",
    "DurableInUse",
    "NatsBridge",
    "NatsConfig",
    "NatsSource",
    "NatsUnavailable",
    "Outbox",
    "claim",
    "claim_subject",
    "read_stream",
    "require_asyncio",
    "trade_frames",
]
