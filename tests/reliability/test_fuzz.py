"""Hypothesis at the input edges this node and its sim read: only counted rejects or one line.

* REST bodies into the sim's handler (sans-IO, every route, a valid token): any JSON, wrong
  types, the real field names with odd values, raw bytes, deep nesting -> an HTTP status,
  never an exception, never a 500 (``RestHandler.errors`` stays 0).
* Tape lines: any bytes, JSON of any shape, deep nesting -> every non-blank line counted,
  the bad ones as malformed, never an exception; a replay of such a tape completes.
* Config files: any TOML the shape almost fits, any text -> a ``NodeConfig`` or one
  ``ConfigError`` line, never another exception.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.tape import TapeCounts, decode_chunk
from protocols.errors import ConfigError
from protocols.rest import RateLimit, RestLimits
from pxnode.replay import replay
from pxnode.sim import GatewaySim, SimConfig
from pxnode.testing import EPOCH
from supervisors.config import load_config

OK_STATUSES = {200, 400, 401, 404, 405, 413, 429}

FIELDS = [
    "userName", "apiKey", "onlyActiveAccounts", "searchText", "live", "contractId",
    "startTime", "endTime", "unit", "unitNumber", "limit", "includePartialBar", "accountId",
    "startTimestamp", "endTimestamp",
]  # fmt: skip
ROUTES = [
    "Auth/loginKey", "Auth/validate", "Auth/logout", "Account/search", "Contract/search",
    "Contract/searchById", "Contract/available", "History/retrieveBars", "Order/searchOpen",
    "Order/search", "Position/searchOpen", "Trade/search",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(
        [
            "2025-01-06T15:00:00Z",
            "2025-01-06",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "not a time",
            "",
            "CON.F.US.MNQ.Z25",
            "demo",
            "demo-api-key",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=20,
)
request_objects = st.dictionaries(st.sampled_from(FIELDS), values, max_size=10)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


times = st.one_of(
    st.sampled_from(["2025-01-06T15:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"]),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=30),
)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
typed_requests = st.one_of(  # every field present and of its type: the handlers run
    st.fixed_dictionaries(
        {
            "contractId": st.sampled_from(["CON.F.US.MNQ.Z25", "CON.F.US.EP.Z25", "X"]),
            "live": st.booleans(),
            "startTime": times,
            "endTime": times,
            "unit": ints | st.integers(0, 7),
            "unitNumber": ints | st.integers(0, 100),
            "limit": ints | st.integers(0, 20_000),
            "includePartialBar": st.booleans(),
        }
    ),
    st.fixed_dictionaries(
        {"accountId": ints | st.just(7001), "startTimestamp": times},
        optional={"endTimestamp": times | st.none()},
    ),
    st.fixed_dictionaries({"searchText": st.text(max_size=30), "live": st.booleans()}),
    st.fixed_dictionaries({"contractId": st.text(max_size=30)}),
)

bodies = st.one_of(
    typed_requests.map(lambda o: json.dumps(o).encode()),
    request_objects.map(lambda o: json.dumps(o).encode()),
    values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.integers(min_value=900, max_value=3000).map(
        lambda d: b'{"userName":"demo","apiKey":"x","z":' + nested(d) + b"}"
    ),
)

_SIM = GatewaySim(
    SimConfig(rest_limits=RestLimits(RateLimit(10**9, 1.0), RateLimit(10**9, 1.0))),
    wall_time=lambda: EPOCH,
)
_TOKEN = _SIM.tokens.mint("demo")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES), body=bodies, authorized=st.booleans())
def test_any_rest_body_gets_a_status_never_an_exception(
    route: str, body: bytes, authorized: bool
) -> None:
    headers = [(b"content-type", b"application/json")]
    if authorized:
        headers.append((b"authorization", b"Bearer " + _TOKEN.encode()))
    status, _, answer = _SIM.rest.handle("POST", f"/api/{route}", headers, body)
    assert status in OK_STATUSES, (status, answer[:300])
    assert _SIM.rest.errors == 0


# ------------------------------------------------------------------------- tape lines

tape_objects = st.fixed_dictionaries(
    {},
    optional={
        "t": st.one_of(st.floats(), st.integers(min_value=-(2**70), max_value=2**70), values),
        "hub": st.sampled_from(["market", "user", "other"]) | values,
        "target": st.sampled_from(["GatewayTrade", "GatewayQuote", "GatewayDepth"]) | values,
        "arguments": values,
    },
)
tape_lines = st.one_of(
    tape_objects.map(lambda o: json.dumps(o).encode()),
    st.binary(max_size=120).map(lambda b: b.replace(b"\n", b"")),
    st.integers(min_value=990, max_value=5000).map(
        lambda d: b'{"t":1.0,"hub":"market","target":"GatewayTrade","arguments":' + nested(d) + b"}"
    ),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(tape_lines, min_size=1, max_size=12))
def test_any_tape_line_is_a_record_or_a_counted_malformed_line(lines: list[bytes]) -> None:
    counts = TapeCounts()
    good = decode_chunk(b"\n".join(lines) + b"\n", counts)
    records = sum(1 for line in lines if line.strip())
    assert counts.lines == records
    assert counts.malformed == records - len(good)


@settings(max_examples=15, deadline=None)
@given(lines=st.lists(tape_lines, min_size=1, max_size=8))
def test_a_replay_of_any_tape_completes(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tape = Path(folder) / "fuzz.tape"
        tape.write_bytes(b"\n".join(lines) + b"\n")
        result = anyio.run(replay, tape, ["1min"])
    assert result.stats.lines == sum(1 for line in lines if line.strip())


# ----------------------------------------------------------------------- config files

CONFIG_KEYS = [
    "contracts", "bars", "validation", "stats", "health", "gateway", "history_bars", "record",
    "tick_interval", "mailbox_capacity", "seed", "timeframes", "ring_size", "grace",
    "api_url", "api_key", "username", "accounts", "rest_limits", "history", "requests",
    "period", "max_future", "stale_after", "hub_timings", "nats", "url", "max_fills",
]  # fmt: skip
toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=20),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(CONFIG_KEYS), inner, max_size=4)
    ),
    max_leaves=15,
)


def _toml_value(value: Any) -> str:
    """TOML for the values generated here (no TOML encoder is a dependency of the project)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _toml(data: dict[str, Any]) -> bytes:
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in data.items()).encode()


config_texts = st.one_of(
    st.dictionaries(st.sampled_from(CONFIG_KEYS), toml_values, max_size=6).map(_toml),
    st.text(max_size=200).map(str.encode),
    st.integers(min_value=500, max_value=6000).map(lambda d: b"a = " + nested(d) + b"\n"),
)


@settings(max_examples=300, deadline=None)
@given(text=config_texts, with_env=st.booleans())
def test_any_config_file_is_a_config_or_one_config_error(text: bytes, with_env: bool) -> None:
    env = {"PROJECT_X_API_URL": "http://127.0.0.1:1"} if with_env else {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pxnode.toml"
        path.write_bytes(text)
        try:
            load_config(path, environ=env)
        except ConfigError as error:
            assert "\n" not in str(error)
