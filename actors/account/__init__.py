"""The account actor: the trader's accounts, open positions, working orders and fills,
kept from the user hub's events (read-only)."""

from .actor import AccountActor as AccountActor

__all__ = ["AccountActor"]
