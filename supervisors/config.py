"""Node configuration: one msgspec Struct tree, every field documented.

Actor-specific sections reuse the actor's own config Struct, so a threshold is
defined (and validated) in exactly one place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from actors.auth import AuthConfig
from actors.connection import HubTimings
from actors.health import HealthConfig
from actors.nats_bridge import NatsConfig
from actors.stats import StatsConfig
from actors.validation import ValidationConfig
from protocols.checks import at_most, count, non_negative, positive
from protocols.errors import ConfigError
from protocols.rest import RestLimits
from protocols.secrets import Secret
from protocols.timeframes import parse_timeframe


class BarsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    timeframes: list[str] = msgspec.field(default_factory=lambda: ["1min", "5min", "1hr", "4hr"])
    """Timeframes built for every contract (names as in docs/rules.md)."""
    ring_size: int = 1000
    """Closed bars kept per contract x timeframe (the bound on bar memory)."""
    grace: float = 0.0
    """Seconds after a bar's end before its timer closes it."""

    def __post_init__(self) -> None:
        for name in self.timeframes:
            parse_timeframe(name)
        count("bars ring_size", self.ring_size)  # here, not first when the actor is built:
        non_negative("bars grace", self.grace)  # that failed as restarts naming no field
        at_most("bars grace", self.grace, 86_400.0, "a bar closes at most a day after its end")


ENVIRONMENT = {
    "PROJECT_X_API_URL": ("api_url", "https://api.topstepx.com"),
    "PROJECT_X_MARKET_HUB": ("market_hub", ""),
    "PROJECT_X_USER_HUB": ("user_hub", ""),
}
"""Where the gateway is, per environment variable: (GatewayConfig field, default).
An empty hub is derived from ``api_url`` (``hub_url``)."""

RTC_HOSTS = (("api.", "rtc."), ("gateway-api-", "gateway-rtc-"))
"""ProjectX's own deployments serve the hubs from a sibling host of the REST API
(api.topstepx.com / rtc.topstepx.com, gateway-api-demo.s2f.projectx.com /
gateway-rtc-demo.s2f.projectx.com); any other gateway serves both from one host."""


def rest_base(api_url: str) -> str:
    """``api_url`` without a trailing ``/`` or ``/api`` (project-x-py's spelling):
    pxnode appends ``/api/...`` itself."""
    base = api_url.rstrip("/")
    return base.removesuffix("/api").rstrip("/")


def hub_url(api_url: str, hub: str) -> str:
    """The ``hub`` (market or user) URL of the gateway whose REST base is ``api_url``."""
    parts = urlsplit(rest_base(api_url))
    host = parts.netloc
    for api, rtc in RTC_HOSTS:
        if host.startswith(api):
            host = rtc + host.removeprefix(api)
            break
    return urlunsplit((parts.scheme, host, f"{parts.path}/hubs/{hub}", "", ""))


def gateway_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The GatewayConfig fields the environment sets (PROJECT_X_API_URL, ..._MARKET_HUB,
    ..._USER_HUB): the one place the CLI, ``load_config`` and ``GatewayConfig()`` read them."""
    env = os.environ if environ is None else environ
    return {field: env[name] for name, (field, _) in ENVIRONMENT.items() if env.get(name)}


def _from_environment(name: str) -> Any:
    field, default = ENVIRONMENT[name]
    return msgspec.field(default_factory=lambda: gateway_environment().get(field, default))


class GatewayConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the gateway is and who we are. Credentials never come from the command line.

    The addresses left out are read from the environment when the config is made, as
    the CLI does: PROJECT_X_API_URL (else TopstepX's), PROJECT_X_MARKET_HUB,
    PROJECT_X_USER_HUB (else derived from ``api_url``).
    """

    api_url: str = _from_environment("PROJECT_X_API_URL")
    """REST base URL (``/api/...`` is appended; a trailing ``/api`` is dropped first)."""
    market_hub: str = _from_environment("PROJECT_X_MARKET_HUB")
    """Empty: derived from ``api_url`` (``{api_url}/hubs/market``; rtc. for TopstepX)."""
    user_hub: str = _from_environment("PROJECT_X_USER_HUB")
    """Empty: derived from ``api_url`` like ``market_hub``."""
    skip_negotiation: bool = True
    """Open the websocket straight away with ``access_token`` in the query (the gateway's
    documented set-up); False POSTs ``{hub}/negotiate`` first."""
    rest_limits: RestLimits = msgspec.field(default_factory=RestLimits)
    """The node's REST budget: History/retrieveBars 30 per 30 s, every other call 200 per 60 s."""
    hub_timings: HubTimings = msgspec.field(default_factory=HubTimings)
    """Keepalive, server timeout (silent freeze), connect/handshake/close timeouts, frame cap."""
    accounts: list[int] = msgspec.field(default_factory=list)
    """Account ids whose orders, positions and trades the user hub subscribes to."""
    username: str | None = None
    """Else PROJECT_X_USERNAME."""
    api_key: Secret | None = None
    """Else PROJECT_X_API_KEY. A ``Secret``: it never prints, logs or encodes."""

    def __post_init__(self) -> None:
        # A user who points pxnode at one gateway means both hubs too, never production's.
        msgspec.structs.force_setattr(self, "api_url", rest_base(self.api_url))
        for name in ("market_hub", "user_hub"):
            if not getattr(self, name):
                hub = name.removesuffix("_hub")
                msgspec.structs.force_setattr(self, name, hub_url(self.api_url, hub))

    def auth(self) -> AuthConfig:
        """The auth settings: credentials from here, else from PROJECT_X_* (``ConfigError``)."""
        return AuthConfig.from_env(
            username=self.username, api_key=self.api_key, api_url=self.api_url
        )


class TapeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A recorded tape as the node's only source (no gateway): ``node.play()`` plays it.

    ``speed`` None plays it as fast as the actors take it (the bars ``pxnode
    replay`` writes); a number plays it at that many tape seconds per second
    (1.0: as recorded), bars closing as they did live. The node's time is the
    tape's: validation judges each line at its ``t``, bar timers follow it.
    """

    path: str
    speed: float | None = None
    judged: bool = False
    """The tape holds trades a node accepted already (``replay --nats`` plays the stream's
    trades as one): validation judges their shape and staleness only."""

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError("tape: path must be a tape file")
        if self.speed is not None:
            positive("tape: speed", self.speed)


class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    contracts: list[str] = msgspec.field(default_factory=list)
    """Contract ids (CON.F.US.MNQ.Z25) or symbols (MNQ, MNQZ5): ``open_node`` looks
    symbols up through Contract/search before anything starts (``ConfigError`` if unknown)."""
    bars: BarsConfig = msgspec.field(default_factory=BarsConfig)
    validation: ValidationConfig = msgspec.field(default_factory=ValidationConfig)
    stats: StatsConfig = msgspec.field(default_factory=StatsConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    """Stale-feed threshold and score weights; its ``contracts`` default to ``contracts``."""
    gateway: GatewayConfig | None = None
    """The live path (auth, both hubs, history back-fill); None for a node fed by a tape."""
    history_bars: int = 200
    """Bars per contract x timeframe back-filled at start (0: none); gaps are always back-filled."""
    record: str | None = None
    """Append every received hub message to this tape file."""
    nats: NatsConfig | None = None
    """Publish the validated stream (trades, quotes, depth, bar events) to NATS JetStream.
    The node then runs on asyncio only (nats-py)."""
    consume: NatsConfig | None = None
    """Take trades from a NATS JetStream stream another node publishes, instead of a
    gateway (a durable consumer: a restarted node resumes where it stopped)."""
    tape: TapeConfig | None = None
    """Play a recorded tape instead of a gateway (``node.play()``): its time is the
    tape's, so ``tick_interval`` does not apply."""
    tick_interval: float = 0.25
    """Seconds between clock ticks (bar timers, stats sampling); 0 = no clock (replay)."""
    mailbox_capacity: int = 4096
    """Capacity of the data-path mailboxes (validation, bars)."""
    seed: int = 0
    """Seed of the node's random number generator (backoff and breaker jitter)."""
    max_fills: int = 1000
    """Fills of the trader's accounts the node keeps (older ones are counted, not kept)."""
    fills_lookback: float | None = None
    """Seconds of fills asked from Trade/search at start and after every reconnect of the
    user hub; None: from the start of the trading day (17:00 Chicago)."""

    def health_config(self) -> HealthConfig:
        """``health`` watching this node's feeds (a consuming node has one: the stream) and,
        unless it names its own, this node's contracts."""
        health = self.health
        if self.consume is not None:
            health = msgspec.structs.replace(health, hubs=["stream"])
        if not health.contracts:
            health = msgspec.structs.replace(health, contracts=list(self.contracts))
        return health

    def __post_init__(self) -> None:
        non_negative("tick_interval", self.tick_interval)  # NaN ran a node without a clock
        if self.gateway is not None or self.consume is not None:
            # 0 (no clock) is a tape's: a live node's bars would never close on time.
            positive("tick_interval", self.tick_interval)
            at_most("tick_interval", self.tick_interval, 60.0, "bars close on its ticks")
        if self.fills_lookback is not None and not self.fills_lookback > 0:
            raise ConfigError(f"fills_lookback must be > 0 seconds, got {self.fills_lookback}")
        if self.max_fills < 1:
            raise ConfigError(f"max_fills must be >= 1, got {self.max_fills}")
        if self.mailbox_capacity < 1:
            raise ConfigError(f"mailbox_capacity must be >= 1, got {self.mailbox_capacity}")
        sources = [self.gateway, self.consume, self.tape]
        if sum(source is not None for source in sources) > 1:
            raise ConfigError(
                "a node takes trades from one source: a gateway, NATS (consume) or a tape"
            )


def _decode_hook(type_: type, value: Any) -> Any:
    if type_ is Secret:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")  # never the value
        return Secret(value)
    raise NotImplementedError


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    gateway: Mapping[str, str] | None = None,
) -> NodeConfig:
    """The node config from a TOML file (optional), then PROJECT_X_* environment variables.

    The environment fills in what the file leaves out of ``[gateway]``
    (PROJECT_X_API_URL, PROJECT_X_MARKET_HUB, PROJECT_X_USER_HUB); credentials
    are read when the node starts (PROJECT_X_USERNAME / PROJECT_X_API_KEY).
    ``gateway`` (the command line's addresses) overrides both; an ``api_url`` given
    there alone moves both hubs with it.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_bytes()
        except OSError as error:
            raise ConfigError(f"cannot read config {str(path)!r}: {error.strerror}") from None
        try:
            data = msgspec.toml.decode(text)
        except msgspec.DecodeError as error:
            raise ConfigError(f"config {str(path)!r} is not valid TOML: {error}") from None
        except RecursionError:
            raise ConfigError(f"config {str(path)!r} is nested too deeply") from None
    given = dict(gateway or {})
    section = data.get("gateway", {})
    if isinstance(section, dict):  # else convert says what is wrong
        section = {**gateway_environment(env), **section}
        if "api_url" in given:  # hubs not given with it follow it, not the file or environment
            section = {k: v for k, v in section.items() if k not in ("market_hub", "user_hub")}
        if section or given:
            data["gateway"] = {**section, **given}
    try:
        return msgspec.convert(data, NodeConfig, dec_hook=_decode_hook)
    except msgspec.ValidationError as error:
        raise ConfigError(f"invalid config: {error}") from None
