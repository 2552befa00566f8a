"""``pxnode chart`` through its real entry point, and what a browser shows of its page."""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
import subprocess
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pxnode.chart import DOWN, PRICE_BOTTOM, TOP, UP, render_chart
from pxnode.cli import app

runner = CliRunner()
CONTRACT = "CON.F.US.MNQ.Z25"
START = 1736175600.0  # 2025-01-06 15:00 UTC


def write_tape(path: Path, minutes: int = 20, seed: int = 3) -> None:
    """One trade a second for ``minutes`` minutes, a seeded random walk."""
    rng = random.Random(seed)
    price, lines = 20000.0, []
    for second in range(minutes * 60):
        price += rng.choice([-1, 1]) * rng.choice([0.25, 0.5, 1.0, 2.0])
        ts = datetime.fromtimestamp(START + second, UTC).isoformat()
        item = {"symbolId": "F.US.MNQ", "price": price, "timestamp": ts, "type": 0,
                "volume": rng.randint(1, 9)}  # fmt: skip
        record = {"t": START + second + 0.01, "hub": "market", "target": "GatewayTrade",
                  "arguments": [CONTRACT, [item]]}  # fmt: skip
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def tape(tmp_path: Path) -> Path:
    path = tmp_path / "t.tape"
    write_tape(path)
    return path


def chart(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["chart", *args])
    return result.exit_code, result.output


def test_a_tape_and_its_replay_outputs_give_the_same_page(tape: Path, tmp_path: Path) -> None:
    for name in ("bars.parquet", "bars.csv"):
        result = runner.invoke(
            app, ["replay", str(tape), "--timeframes", "1min,5min", "--out", str(tmp_path / name)]
        )
        assert result.exit_code == 0, result.output
    pages = []
    for source in ("t.tape", "bars.parquet", "bars.csv"):
        out = tmp_path / f"{source}.html"
        code, output = chart(str(tmp_path / source), "--timeframe", "1min", "--out", str(out))
        assert code == 0, output
        pages.append(out.read_text())
    assert pages[0] == pages[1] == pages[2]

    page = pages[0]
    bars = pl.read_parquet(tmp_path / "bars.parquet").filter(pl.col("timeframe") == "1min")
    up = bars.filter(pl.col("close") >= pl.col("open")).height
    assert page.count(f'<g fill="{UP}"') == up and page.count(f'<g fill="{DOWN}"') == 20 - up
    assert 0 < up < 20
    # Self-contained: nothing is fetched, nothing runs.
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert page.count("http") == 1 and 'xmlns="http://www.w3.org/2000/svg"' in page
    assert f"{CONTRACT} 1min · 20 bars" in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["TAPE", "--out", "c.html"], "charting a tape needs --timeframe"),
        (["TAPE", "--timeframe", "7min", "--out", "c.html"], "invalid timeframe '7min'"),
        (["TAPE", "--timeframe", "1min", "--out", "c.png"], "--out must end in .html"),
        (["TAPE", "--timeframe", "1min", "--contract", "ES", "--out", "c.html"],
         f"no bars of contract 'ES'; there are {CONTRACT}"),
        (["BARS", "--out", "c.html"], "give --timeframe: 1min, 5min"),
        (["NOTBARS", "--out", "c.html"], "is not a replay output: no contract"),
        (["missing.parquet", "--out", "c.html"], "cannot read bars"),
        (["/no/such.tape", "--timeframe", "1min", "--out", "c.html"], "cannot open tape"),
        (["TAPE", "--timeframe", "1min", "--out", "/no/such/dir/c.html"], "no such directory"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line(
    tape: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    bars, notbars = tmp_path / "bars.parquet", tmp_path / "notbars.csv"
    runner.invoke(app, ["replay", str(tape), "--timeframes", "1min,5min", "--out", str(bars)])
    notbars.write_text("a,b\n1,2\n")
    names = {"TAPE": tape, "BARS": bars, "NOTBARS": notbars}
    args = [str(names[a]) if a in names else a for a in args]
    args = [str(tmp_path / a) if a.startswith(("c.", "missing")) else a for a in args]
    code, output = chart(*args)
    assert code == 2, output
    assert output.startswith("pxnode: error: ") and message in output
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output


# ------------------------------------------------------------------- in a browser


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("no Chromium to render the chart in (Debian: apt-get install chromium)")


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, bytes] = {}
    at = 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        chunks[kind] = chunks.get(kind, b"") + data[at + 8 : at + 8 + length]
        at += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and colour in (2, 6) and interlace == 0
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (
                    line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)
                ) & 0xFF
        rows.append(bytes(b for i, b in enumerate(line) if i % channels < 3))
        previous = line
    return width, height, rows


def column_runs(rows: list[bytes], width: int, colour: str) -> int:
    """Runs of adjacent pixel columns holding ``colour``: one per candle of that colour."""
    rgb = bytes.fromhex(colour[1:])
    hit = [any(row[3 * x : 3 * x + 3] == rgb for row in rows) for x in range(width)]
    return sum(1 for x in range(width) if hit[x] and (x == 0 or not hit[x - 1]))


@pytest.mark.slow
def test_chromium_shows_the_candles(tape: Path, tmp_path: Path) -> None:
    executable = browser()
    page, shot = tmp_path / "c.html", tmp_path / "c.png"
    code, output = chart(str(tape), "--timeframe", "1min", "--out", str(page))
    assert code == 0, output
    began = time.perf_counter()
    done = subprocess.run(
        [executable, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,760",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    print(f"chromium rendered the chart in {time.perf_counter() - began:.2f} s")
    width, height, rows = read_png(shot.read_bytes())
    assert (width, height) == (1200, 760)
    html = page.read_text()
    up, down = html.count(f'<g fill="{UP}"'), html.count(f'<g fill="{DOWN}"')
    assert up > 0 and down > 0
    pane = rows[TOP:PRICE_BOTTOM]  # the price pane: candles only, no volume
    assert (column_runs(pane, width, UP), column_runs(pane, width, DOWN)) == (up, down)


@pytest.mark.parametrize(
    ("low", "high", "labels"),
    [
        (19990.0, 20150.0, [str(20000 + 20 * i) for i in range(8)]),
        (5000.0, 5001.0, ["5000.0", "5000.2", "5000.4", "5000.6", "5000.8", "5001.0"]),
        (
            4000.0,
            4020.0,
            [
                "4000.0",
                "4002.5",
                "4005.0",
                "4007.5",
                "4010.0",
                "4012.5",
                "4015.0",
                "4017.5",
                "4020.0",
            ],
        ),
    ],
)
def test_price_scale_is_round_numbers(low: float, high: float, labels: list[str]) -> None:
    frame = pl.DataFrame(
        {"contract": ["C"] * 2, "timeframe": ["1min"] * 2,
         "start": [datetime(2025, 1, 6, tzinfo=UTC)] * 2,
         "open": [low, high], "high": [high, high], "low": [low, low], "close": [high, low],
         "volume": [1, 2]}
    )  # fmt: skip
    page = render_chart(frame)
    grid = re.findall(r'<text x="1118" y="[\d.]+">([\d.]+)</text>', page)
    assert grid == labels


HEADER = "contract,timeframe,start,open,high,low,close,volume,trades\n"


@pytest.mark.parametrize(
    "row",
    [
        "X,1min,2026-12-04T10:12:00.000000Z,1,inf,0.5,1,1,1",  # a traceback, exit 1
        "X,1min,2026-12-04T10:12:00.000000Z,1,NaN,0.5,1,1,1",
        "X,1min,notadate,1,2,0.5,1,1,1",  # polars' five-line explanation
    ],
)
def test_a_bars_file_another_tool_wrote_badly_is_one_error_line(tmp_path: Path, row: str) -> None:
    bars = tmp_path / "bars.csv"
    bars.write_text(HEADER + "X,1min,2026-12-04T10:11:00.000000Z,1,2,0.5,1,1,1\n" + row + "\n")
    code, err = chart(str(bars), "--out", str(tmp_path / "c.html"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
