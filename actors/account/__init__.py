"""The account actor: the trader's accounts, open positions, working orders and fills,
kept from the user hub's events and the gateway's REST searches (read-only)."""

from .actor import AccountActor as AccountActor
from .config import COUNTERS as COUNTERS
from .config import AccountConfig as AccountConfig

__all__ = ["COUNTERS", "AccountActor", "AccountConfig"]
