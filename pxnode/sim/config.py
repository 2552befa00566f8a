"""The one configuration of a simulated gateway, checked when it is built."""

from __future__ import annotations

import msgspec

from protocols.checks import is_finite, positive
from protocols.errors import ConfigError
from protocols.rest import RestLimits
from pxnode.sim.account import DEMO_API_KEY, DEMO_USERNAME
from pxnode.sim.contracts import CONTRACTS, DEFAULT_CONTRACTS
from pxnode.sim.faults import parse_faults


def _demo_credentials() -> dict[str, str]:
    return {DEMO_USERNAME: DEMO_API_KEY}


class SimConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``serve`` needs; invalid values raise ``ConfigError`` at construction.

    ``rate`` is trades per second over all ``contracts``; ``faults`` is a SPEC (see
    the package docstring); ``credentials`` maps user names to API keys and never
    shows up in a repr. ``tick`` is how often the market is advanced and fanned out:
    events due in one tick leave in one websocket message per connection.
    ``contracts`` may name any of ``CONTRACTS`` (the default is the four of
    ``DEFAULT_CONTRACTS``).
    """

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 1
    rate: float = 200.0
    contracts: tuple[str, ...] = tuple(spec.id for spec in DEFAULT_CONTRACTS)
    faults: str = ""
    credentials: dict[str, str] = msgspec.field(default_factory=_demo_credentials)
    token_ttl: float = 24 * 3600.0
    ping_interval: float = 15.0
    client_timeout: float = 30.0
    http_timeout: float = 60.0
    """Seconds a plain-HTTP connection has to send its next whole request (keep-alive
    wait included); then it is closed and counted (``http_timeouts``)."""
    max_message_size: int = 1 << 20
    tick: float = 0.02
    history_hours: float = 6.0
    rest_limits: RestLimits = msgspec.field(default_factory=RestLimits)
    """The gateway's REST rate limits, answered with HTTP 429 beyond them."""
    user_snapshot: bool = True
    """Answer a user-hub subscription with the current state of what it covers (accounts,
    open orders and positions, fills). The real gateway sends nothing then (a client asks
    the REST searches); False behaves like it, as ``pxnode demo`` does."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if not (is_finite(self.rate) and 0 < self.rate <= 1_000_000):
            raise ConfigError(f"rate must be in (0, 1e6] trades/s, got {self.rate}")
        if not self.contracts:
            raise ConfigError("at least one contract is needed")
        unknown = [c for c in self.contracts if c not in CONTRACTS]
        if unknown:
            raise ConfigError(f"unknown contracts {unknown}; known: {', '.join(CONTRACTS)}")
        for name in (
            "token_ttl",
            "ping_interval",
            "client_timeout",
            "http_timeout",
            "tick",
            "history_hours",
        ):
            positive(name, getattr(self, name))
        if self.max_message_size < 1024:
            raise ConfigError(
                f"max_message_size must be at least 1024, got {self.max_message_size}"
            )
        if not self.credentials:
            raise ConfigError("credentials must name at least one user")
        parse_faults(self.faults)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__struct_fields__
            if name != "credentials"
        )
        return f"SimConfig({shown}, credentials=<{len(self.credentials)} redacted>)"

    __str__ = __repr__
