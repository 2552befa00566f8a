"""How the account actor asks the gateway's REST API for the state the user hub never sends."""

from __future__ import annotations

from typing import Final

import msgspec

from protocols import rest
from protocols.checks import non_negative, positive
from protocols.errors import ConfigError

COUNTERS: Final = (
    "requests",  # HTTP requests sent, retries included
    "syncs",  # REST syncs completed (at start and after every reconnect of the user hub)
    "sync_failures",  # syncs given up on after a failed request (retried with backoff)
    "items_rejected",  # items of an answer that are not the endpoint's shape (skipped)
    "contracts_unpriced",  # Contract/searchById lookups that failed (tried again next sync)
    *(f"failures_{kind}" for kind in rest.FAILURES),  # why a request was given up
)


class AccountConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The REST side of the account actor; invalid values raise ``ConfigError``.

    At start (once the user hub is up, or after ``start_grace`` seconds without
    it) and after every reconnect of the user hub the actor asks Account/search
    (active accounts), then per account Position/searchOpen, Order/searchOpen
    and Trade/search. ``accounts``: the only accounts followed -- listed, searched,
    their hub events applied (empty: every active account, and the user hub is
    subscribed to each).
    ``fills_lookback`` is how many seconds of fills Trade/search reaches back;
    None: from the start of the trading day (17:00 Chicago).

    Times are seconds. One request is retried like history's (429 waited out,
    5xx, timeouts and transport errors ``max_attempts`` times in all, backoff
    ``backoff_min`` doubling to ``backoff_max`` shortened by up to
    ``backoff_jitter``); a sync given up on is tried again after
    ``resync_min`` doubling to ``resync_max``, or at once when the hub
    reconnects. ``token_timeout`` bounds the wait for auth.
    """

    api_url: str
    accounts: list[int] = msgspec.field(default_factory=list)
    fills_lookback: float | None = None
    start_grace: float = 30.0
    request_timeout: float = 30.0
    token_timeout: float = 60.0
    max_attempts: int = 4
    backoff_min: float = 1.0
    backoff_max: float = 30.0
    backoff_jitter: float = 0.1
    retry_after_max: float = 120.0
    resync_min: float = 5.0
    resync_max: float = 300.0

    def __post_init__(self) -> None:
        if not self.api_url.startswith(("http://", "https://")):
            # Not shown: a value that is no URL may be a secret in the wrong setting.
            raise ConfigError("account: api_url must be an http(s) URL (the value is not shown)")
        if self.fills_lookback is not None:
            positive("account: fills_lookback", self.fills_lookback)
        if not 1 <= self.max_attempts <= 100:
            raise ConfigError(f"account: max_attempts must be in 1..100, got {self.max_attempts}")
        for name in ("start_grace", "retry_after_max"):
            non_negative(f"account: {name}", getattr(self, name))
        for name in (
            "request_timeout",
            "token_timeout",
            "backoff_min",
            "backoff_max",
            "resync_min",
            "resync_max",
        ):
            positive(f"account: {name}", getattr(self, name))
        if self.backoff_min > self.backoff_max or self.resync_min > self.resync_max:
            raise ConfigError("account: a backoff minimum must not exceed its maximum")
        if not 0 <= self.backoff_jitter < 1:
            raise ConfigError(
                f"account: backoff_jitter must be in [0, 1), got {self.backoff_jitter}"
            )
