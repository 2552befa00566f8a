from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from protocols.errors import ConfigError
from protocols.secrets import Secret
from supervisors.config import GatewayConfig, NodeConfig, load_config


def test_defaults_need_no_file_and_no_environment() -> None:
    config = load_config(None, environ={})
    assert config == NodeConfig()
    assert config.gateway is None
    assert config.bars.timeframes == ["1min", "5min", "1hr", "4hr"]


def test_toml_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "pxnode.toml"
    path.write_text(
        'contracts = ["CON.F.US.MNQ.Z25"]\n'
        "[bars]\ntimeframes = ['1sec', '4hr']\nring_size = 50\n"
        "[validation]\nstale_after = 30.0\n"
        "[gateway]\nuser_hub = 'http://127.0.0.1:9/hubs/user'\napi_key = 'k-123'\n"
    )
    env = {"PROJECT_X_API_URL": "http://127.0.0.1:9", "PROJECT_X_USER_HUB": "ignored"}
    config = load_config(path, environ=env)
    assert config.contracts == ["CON.F.US.MNQ.Z25"]
    assert config.bars.timeframes == ["1sec", "4hr"] and config.bars.ring_size == 50
    assert config.validation.stale_after == 30.0
    assert config.gateway == GatewayConfig(
        api_url="http://127.0.0.1:9",
        user_hub="http://127.0.0.1:9/hubs/user",
        api_key=Secret("k-123"),
    )
    assert "k-123" not in repr(config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("contracts = [", "not valid TOML"),
        ("colour = 'red'", "invalid config"),
        ("[bars]\ntimeframes = ['7min']", "invalid timeframe"),
        ("tick_interval = -1", "tick_interval"),
        ("tick_interval = nan", "tick_interval"),  # NaN once ran a node without a clock
        ("tick_interval = inf", "tick_interval"),
        ("[validation]\nmax_spike = -0.5", "max_spike"),
        ("[validation]\nmax_spik = 0.01", "invalid config"),  # a typo once ran the default
        ("[stats]\nwindw = 60", "invalid config"),
        ("[bars]\nring_size = 0", "ring_size"),  # once said only as the bars' restarts
        ("[bars]\ngrace = nan", "grace"),
        ("[bars]\ngrace = -1", "grace"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml", environ={})


def test_gateway_config_reads_the_environment_like_the_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROJECT_X_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("PROJECT_X_MARKET_HUB", "http://127.0.0.1:9/hubs/market")
    monkeypatch.delenv("PROJECT_X_USER_HUB", raising=False)
    embedded = GatewayConfig()
    assert (embedded.api_url, embedded.market_hub) == (
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/hubs/market",
    )
    assert embedded.user_hub == "http://127.0.0.1:9/hubs/user"  # follows api_url
    assert embedded.skip_negotiation  # the gateway's documented set-up
    assert load_config(None).gateway == embedded  # the CLI's path: the same config
    assert GatewayConfig(api_url="http://other").api_url == "http://other"  # given wins


def test_hubs_follow_the_api_url_and_a_trailing_api_is_dropped() -> None:
    """Issue 12 item 10: ``--api-url`` alone sent both hubs to production."""
    local = GatewayConfig(api_url="https://x/api/", market_hub="", user_hub="")
    assert (local.api_url, local.market_hub, local.user_hub) == (
        "https://x",
        "https://x/hubs/market",
        "https://x/hubs/user",
    )
    topstep = GatewayConfig(api_url="https://api.topstepx.com", market_hub="", user_hub="")
    assert topstep.market_hub == "https://rtc.topstepx.com/hubs/market"
    demo = GatewayConfig(api_url="https://gateway-api-demo.s2f.projectx.com/api", user_hub="")
    assert demo.user_hub == "https://gateway-rtc-demo.s2f.projectx.com/hubs/user"


def test_an_api_url_given_alone_moves_the_hubs_of_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[gateway]\nmarket_hub = "https://rtc.topstepx.com/hubs/market"\n')
    env = {"PROJECT_X_USER_HUB": "https://rtc.topstepx.com/hubs/user"}
    config = load_config(path, environ=env, gateway={"api_url": "http://127.0.0.1:9/api"})
    assert config.gateway is not None
    assert (config.gateway.market_hub, config.gateway.user_hub) == (
        "http://127.0.0.1:9/hubs/market",
        "http://127.0.0.1:9/hubs/user",
    )
    both = {"api_url": "http://h", "market_hub": "ws://m/hubs/market"}
    given = load_config(None, environ={}, gateway=both).gateway
    assert given is not None and given.market_hub == "ws://m/hubs/market"
    assert given.user_hub == "http://h/hubs/user"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('tick_interval = 0.0\n[gateway]\napi_url = "http://127.0.0.1:9"\n', "tick_interval"),
        ('tick_interval = 1e308\n[gateway]\napi_url = "http://127.0.0.1:9"\n', "tick_interval"),
        ("[consume]\n[validation]\n", None),  # a consuming node's default clock is fine
        ("[bars]\ngrace = 1e308\n", "bars grace"),
        ("[validation]\nstale_after = 1e308\n", "validation.stale_after"),
        ("[validation]\nmax_age = 1e308\n", "validation.max_age"),
        ("[validation]\nmax_future = 1e308\n", "validation.max_future"),
    ],
)
def test_numbers_a_running_node_cannot_work_with_are_refused_naming_them(
    tmp_path: Path, text: str, field: str | None
) -> None:
    """A live node without a working clock ran with bars that never closed and said it
    was healthy; a huge grace or staleness made a child fail at every start, the error
    naming no field (found by a hunt)."""
    path = tmp_path / "c.toml"
    path.write_text(text)
    if field is None:
        load_config(path, environ={})
        return
    with pytest.raises(ConfigError, match=f"^{field} must be"):
        load_config(path, environ={})


def test_a_setting_that_is_no_url_is_named_never_shown() -> None:
    """PROJECT_X_API_URL and PROJECT_X_API_KEY swapped by mistake printed the key."""
    key = "Zk9sEcReTkEy123="
    config = load_config(None, environ={"PROJECT_X_API_URL": key})
    assert config.gateway is not None
    with pytest.raises(ConfigError, match="api_url") as raised:
        msgspec.structs.replace(config.gateway, username="u", api_key=Secret("k")).auth()
    assert key not in str(raised.value)
