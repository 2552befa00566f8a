"""What a mailbox looks like from outside the runtime: its policies and its statistics.

The runtime (``supervisors.mailbox``) implements mailboxes; everyone else —
the stats actor, the metrics exposition, the dashboard, an application —
only ever reads ``MailboxStatistics``, the one type that travels unchanged
from a mailbox to every view of it.
"""

from __future__ import annotations

import enum

import msgspec


class OverflowPolicy(enum.Enum):
    """What a full mailbox does with one more message."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    FAIL = "fail"


class MailboxStatistics(msgspec.Struct, frozen=True):
    """One mailbox at one instant. Every message offered was either queued
    (``told``) or counted in ``dropped``; ``depth <= capacity`` always."""

    name: str
    policy: OverflowPolicy
    capacity: int
    depth: int
    told: int
    dropped: int
    closed: bool
