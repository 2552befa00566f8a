"""Where the node goes and what it says about it, through the real entry point (issue 12, 10).

Before: ``--api-url`` alone sent both hubs to TopstepX's production hosts (a ``record``
against a local gateway wrote an empty tape, exit 0); ``/api`` at its end gave
"/api/Auth/loginKey answered HTTP 404" without the URL requested; a URL's
``user:password@`` was echoed in errors; ``pxnode gateway`` knew only the demo login.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from actors.tape import read_tape
from tests.subprocess_env import PXNODE, gateway, strict_env

USER = {"PROJECT_X_USERNAME": "alice", "PROJECT_X_API_KEY": "alices-key"}


def pxnode(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PXNODE, *args], capture_output=True, text=True, timeout=60, env=strict_env(**env)
    )


def test_api_url_alone_with_api_suffix_records_from_a_gateway_with_the_users_credentials(
    tmp_path: Path,
) -> None:
    """The hubs follow ``--api-url`` (its ``/api`` dropped), and ``pxnode gateway`` takes
    the user's own PROJECT_X_USERNAME / PROJECT_X_API_KEY (issue 12, deliver 6)."""
    tape = tmp_path / "t.jsonl"
    with gateway("--rate", "500", **USER) as url:
        done = pxnode(
            "record", str(tape), "--contracts", "CON.F.US.MNQ.Z25", "--api-url", f"{url}/api",
            "--duration", "2", "--json", **USER,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert any(line.target == "GatewayTrade" for chunk in read_tape(tape) for line in chunk)


def test_an_http_error_names_the_url_requested_without_its_credentials() -> None:
    with gateway() as url:
        host = url.removeprefix("http://")
        done = pxnode(
            "run", "--contracts", "MNQ", "--api-url", f"http://u:SECRET@{host}/base/api",
            "--duration", "1", PROJECT_X_USERNAME="demo", PROJECT_X_API_KEY="demo-api-key",
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"pxnode: error: POST http://***@{host}/base/api/Auth/loginKey answered HTTP 404"
    ]


def test_credentials_in_a_configured_url_never_print(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        'contracts = ["CON.F.US.MNQ.Z25"]\n[gateway]\napi_url = "http://u:SECRET@127.0.0.1:1"\n'
    )
    done = pxnode("run", "--config", str(config), **USER)
    assert done.returncode == 2
    assert "SECRET" not in done.stderr + done.stdout
    assert done.stderr.strip().splitlines() == [
        "pxnode: error: gateway unreachable at http://***@127.0.0.1:1: ConnectError"
    ]
    config.write_text('[gateway]\napi_url = "ftp://u:SECRET@h"\n')
    done = pxnode("run", "--config", str(config), "--contracts", "X", **USER)
    assert done.returncode == 2 and "SECRET" not in done.stderr, done.stderr
    assert "api_url must be an http(s) URL (the value is not shown)" in done.stderr
