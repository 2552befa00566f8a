"""Tapes: byte-exact round trips, every malformed line counted, no secret on a tape."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import actors.tape.recorder as recorder
from actors.tape import TapeCounts, TapeLine, TapeRecorder, encode_line, read_tape
from protocols.errors import TapeError
from protocols.messages import (
    CountersReported,
    Flush,
    HubMessageReceived,
    Stop,
    Tick,
    TokenIssued,
)
from protocols.secrets import Secret
from pxnode.testing import FakeContext, RecordingRef
from supervisors.mailbox import Mailbox, MailboxSpec
from supervisors.ref import MailboxRef

T0 = 1737469800.125


def hub(arguments: bytes, target: str = "GatewayTrade", t: float = T0, h: str = "market") -> Any:
    return HubMessageReceived(h, target, msgspec.Raw(arguments), t)  # type: ignore[arg-type]


class RecorderContext(FakeContext):
    """The recorder's context: stats recorded; it never reads a clock of its own."""

    def __init__(self) -> None:
        super().__init__("recorder", [RecordingRef("stats")], wall=self._no_clock)

    @staticmethod
    def _no_clock() -> float:
        raise AssertionError("the recorder writes receive times, never its own clock")

    @property
    def reports(self) -> list[CountersReported]:
        return self.told("stats")


async def record(path: Path, *messages: Any) -> tuple[TapeRecorder, RecorderContext]:
    """Run a recorder over ``messages`` until its inbox ends."""
    actor, ctx = TapeRecorder(path), RecorderContext()
    inbox: Mailbox[Any] = Mailbox("recorder", MailboxSpec(len(messages) + 1))
    for msg in messages:
        inbox.send_nowait(msg)
    inbox.close()
    try:
        await actor.run(inbox, ctx)
    finally:
        inbox.dispose()
    return actor, ctx


def lines_of(path: Path) -> tuple[list[TapeLine], TapeCounts]:
    counts = TapeCounts()
    return [r for chunk in read_tape(path, counts) for r in chunk], counts


# ------------------------------------------------------------------ recording

ODD_ARGUMENTS = [
    b'["CON.F.US.MNQ.H25",[{"price":21000.10,"volume":1,"timestamp":"2025-01-21T14:30:00Z"}]]',
    b'[ "CON.F.US.MES.H25" , { "lastPrice" : 6050.250 , "x" : [ ] } ]',  # spaces kept
    '["CON.\\u00e9",{"s":"caf\u00e9 \\"q\\" \\n","n":1e3,"z":-0.0}]'.encode(),
    b"[]",
]


def size(tape: Path) -> int:
    """The bytes a reader reads: the whole file."""
    return tape.stat().st_size


@pytest.mark.anyio
async def test_round_trip_keeps_arguments_byte_exact(tmp_path: Path) -> None:
    tape = tmp_path / "a.tape"
    sent = [hub(a, t=T0 + i) for i, a in enumerate(ODD_ARGUMENTS)]
    sent.append(hub(b'[1,{"action":0,"data":{}}]', "GatewayUserOrder", T0 + 9, "user"))
    actor, ctx = await record(tape, *sent)
    read, counts = lines_of(tape)
    assert [(r.t, r.hub, r.target, bytes(r.arguments)) for r in read] == [
        (m.received_at, m.hub, m.target, bytes(m.arguments)) for m in sent
    ]
    assert counts == TapeCounts(lines=5, malformed=0, bytes_read=size(tape))
    assert actor.counters["lines_written"] == 5
    assert actor.counters["bytes_written"] == tape.stat().st_size
    assert ctx.reports[-1].counters == actor.counters  # a final report when the inbox ends
    assert ctx.healthy == 1
    first = tape.read_bytes().split(b"\n")[0]
    head = b'{"t":1737469800.125,"hub":"market","target":"GatewayTrade","arguments":'
    assert first == head + ODD_ARGUMENTS[0] + b"}"


@pytest.mark.anyio
async def test_recording_appends_to_an_existing_tape(tmp_path: Path) -> None:
    tape = tmp_path / "a.tape"
    await record(tape, hub(b"[1]"))
    await record(tape, hub(b"[2]"))
    assert [bytes(r.arguments) for r in lines_of(tape)[0]] == [b"[1]", b"[2]"]


@pytest.mark.anyio
async def test_newlines_between_tokens_are_folded_values_unchanged(tmp_path: Path) -> None:
    tape = tmp_path / "a.tape"
    await record(tape, hub(b'[\n "C",\r\n  {"s": "a\\nb", "p": 1.50}\n]'))
    (line,), _ = lines_of(tape)
    assert bytes(line.arguments) == b'["C",{"s":"a\\nb","p":1.50}]'
    assert tape.read_bytes().count(b"\n") == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "msg",
    [
        hub(b"[1]", t=float("nan")),
        hub(b"[1]", t=float("inf")),
        hub(b"[1]", t=-1.0),
        hub(b"[1]", h="foo"),
        hub(b'{"not": "an array"}'),
        hub(b""),
        hub(b"[1,\n"),  # a newline forces a reformat, which finds the JSON broken
    ],
    ids=["nan", "inf", "negative", "hub", "object", "empty", "broken"],
)
async def test_what_cannot_be_a_tape_line_is_counted_not_written(tmp_path: Path, msg: Any) -> None:
    tape = tmp_path / "a.tape"
    actor, _ = await record(tape, msg, hub(b"[1]"))
    assert actor.counters["lines_unrecordable"] == 1
    assert [bytes(r.arguments) for r in lines_of(tape)[0]] == [b"[1]"]


@pytest.mark.anyio
async def test_tick_and_flush_put_the_data_in_the_file(tmp_path: Path) -> None:
    tape = tmp_path / "a.tape"
    actor, ctx = TapeRecorder(tape), RecorderContext()
    inbox: Mailbox[Any] = Mailbox("recorder", MailboxSpec(16))
    ref = MailboxRef(inbox)
    async with anyio.create_task_group() as tg:
        tg.start_soon(actor.run, inbox, ctx)
        await ref.tell(hub(b"[1]"))
        counters = await ref.ask(Flush(), timeout=1)
        assert counters["lines_written"] == 1
        assert tape.read_bytes().endswith(b'"arguments":[1]}\n')  # on disk, file still open
        await ref.tell(hub(b"[2]"))
        await ref.tell(Tick(now=T0))
        await ref.ask(Flush(), timeout=1)  # Tick already flushed; Flush orders the check
        assert len(lines_of(tape)[0]) == 2
        assert ctx.reports[-1].source == "recorder"
        await ref.tell(Stop())
        await ref.tell(hub(b"[3]"))  # after Stop: never written
    inbox.dispose()
    assert [bytes(r.arguments) for r in lines_of(tape)[0]] == [b"[1]", b"[2]"]


@pytest.mark.anyio
async def test_no_secret_reaches_a_tape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, jwt = "sk-live-DO-NOT-LEAK-123", "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2VjcmV0"
    monkeypatch.setenv("PROJECT_X_API_KEY", key)
    monkeypatch.setenv("PROJECT_X_USERNAME", "trader")
    tape = tmp_path / "a.tape"
    token = TokenIssued(token=Secret(jwt), expires_at=T0 + 3600)
    actor, ctx = await record(tape, hub(b'["C",[]]'), token, Flush())
    data = tape.read_bytes()
    assert key.encode() not in data and jwt.encode() not in data
    assert actor.counters["messages_ignored"] == 2  # the token message is not a hub message
    assert key not in repr(actor) and jwt not in repr(ctx.reports)


@pytest.mark.anyio
async def test_an_unwritable_tape_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TapeError, match="cannot open tape"):
        await record(tmp_path, hub(b"[1]"))  # a directory


# -------------------------------------------------------------------- reading

GOOD = b'{"t":1737469800.5,"hub":"market","target":"GatewayTrade","arguments":["C",[]]}'
MALFORMED = [
    b"not json",
    b'{"t":1737469800.5,"hub":"market","target":"GatewayTrade","arguments":["C",[]]',  # cut off
    b'{"t":"1737469800.5","hub":"market","target":"X","arguments":[]}',  # t a string
    b'{"t":true,"hub":"market","target":"X","arguments":[]}',
    b'{"t":-1,"hub":"market","target":"X","arguments":[]}',
    b'{"t":1e400,"hub":"market","target":"X","arguments":[]}',
    b'{"t":1e300,"hub":"market","target":"X","arguments":[]}',
    b'{"t":null,"hub":"market","target":"X","arguments":[]}',
    b'{"t":1.0,"hub":"foo","target":"X","arguments":[]}',
    b'{"t":1.0,"hub":"market","target":5,"arguments":[]}',
    b'{"t":1.0,"hub":"market","arguments":[]}',  # missing target
    b'{"t":1.0,"hub":"market","target":"X"}',  # missing arguments
    b'{"t":1.0,"hub":"market","target":"X","arguments":{"a":1}}',
    b'{"t":1.0,"hub":"market","target":"X","arguments":"[1]"}',
    b'{"t":1.0,"hub":"market","target":"X","arguments":null}',
    b"[1,2,3]",
    b'"just a string"',
    GOOD + GOOD,  # two records glued on one line
    GOOD + b" trailing",
    b"\xff\xfe binary \x00 junk",
]


def test_reader_counts_and_skips_every_malformed_line(tmp_path: Path) -> None:
    tape = tmp_path / "a.tape"
    body = [GOOD]
    for bad in MALFORMED:
        body += [bad, GOOD]
    tape.write_bytes(b"\n".join(body) + b"\n\n   \n\r\n")  # trailing blank lines
    read, counts = lines_of(tape)
    records, broken = 2 * len(MALFORMED) + 1, len(MALFORMED)
    assert counts == TapeCounts(lines=records, malformed=broken, bytes_read=size(tape))
    assert len(read) == len(MALFORMED) + 1
    assert all(bytes(r.arguments) == b'["C",[]]' for r in read)


_CUT = GOOD.index(b",") + 1  # a record split over two lines between two of its tokens


@pytest.mark.parametrize(
    ("body", "lines", "malformed"),
    [
        (GOOD + GOOD + b"\n\n", 1, 1),  # a blank line once cancelled the glued line out
        (GOOD + b" " + GOOD + b"\n" + GOOD + b"\n\n", 2, 1),
        (GOOD[:_CUT] + b"\n" + GOOD[_CUT:] + b"\n" + GOOD + GOOD + b"\n", 3, 3),
    ],
    ids=["glued-and-blank", "glued-spaced", "split-and-glued"],
)
def test_every_line_holds_one_record_or_is_malformed(
    tmp_path: Path, body: bytes, lines: int, malformed: int
) -> None:
    """A JSON stream parser takes these; the tape format does not (one record per line)."""
    tape = tmp_path / "a.tape"
    tape.write_bytes(body)
    read, counts = lines_of(tape)
    assert counts == TapeCounts(lines=lines, malformed=malformed, bytes_read=size(tape))
    assert len(read) == lines - malformed


def test_reader_handles_crlf_blank_lines_and_a_missing_final_newline(tmp_path: Path) -> None:
    tape = tmp_path / "a.tape"
    tape.write_bytes(b"\r\n" + GOOD + b"\r\n\n  \t\n" + GOOD + b"\n" + GOOD)
    read, counts = lines_of(tape)
    # blank lines are not records
    assert counts == TapeCounts(lines=3, malformed=0, bytes_read=size(tape))
    assert [r.t for r in read] == [1737469800.5] * 3


def test_a_byte_order_mark_at_the_start_is_not_part_of_the_first_line(tmp_path: Path) -> None:
    tape = tmp_path / "a.tape"
    tape.write_bytes(codecs.BOM_UTF8 + GOOD + b"\r\n" + GOOD + b"\r\n")  # saved by a Windows editor
    read, counts = lines_of(tape)
    assert counts == TapeCounts(lines=2, malformed=0, bytes_read=size(tape)) and len(read) == 2
    tape.write_bytes(GOOD + b"\n" + codecs.BOM_UTF8 + GOOD + b"\n")  # only a file starts with one
    assert lines_of(tape)[1] == TapeCounts(lines=2, malformed=1, bytes_read=size(tape))


def test_reader_counts_a_cut_off_last_line(tmp_path: Path) -> None:
    tape = tmp_path / "a.tape"
    tape.write_bytes(GOOD + b"\n" + GOOD[:40])  # a crash mid-write
    read, counts = lines_of(tape)
    assert counts == TapeCounts(lines=2, malformed=1, bytes_read=size(tape)) and len(read) == 1


def test_lines_spanning_chunks_and_too_long_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder, "CHUNK_SIZE", 7)
    monkeypatch.setattr(recorder, "MAX_LINE", 100)
    long_line = b'{"t":1.0,"hub":"market","target":"X","arguments":["' + b"x" * 200 + b'"]}'
    tape = tmp_path / "a.tape"
    tape.write_bytes(b"\n".join([GOOD, long_line, GOOD, b"bad", GOOD, long_line]) + b"\n")
    read, counts = lines_of(tape)
    assert counts == TapeCounts(lines=6, malformed=3, bytes_read=size(tape))
    assert len(read) == 3


def test_empty_tape_has_no_lines(tmp_path: Path) -> None:
    tape = tmp_path / "a.tape"
    tape.write_bytes(b"")
    assert lines_of(tape) == ([], TapeCounts(0, 0, 0))


def test_an_unreadable_tape_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TapeError, match=r"cannot open tape '.*nope\.tape': No such file"):
        lines_of(tmp_path / "nope.tape")
    with pytest.raises(TapeError, match=r"cannot (open|read) tape"):
        lines_of(tmp_path)  # a directory


def test_encode_line_is_the_tape_format() -> None:
    line = encode_line(hub(b'["C",1]', "GatewayQuote", 1.5))
    assert line == b'{"t":1.5,"hub":"market","target":"GatewayQuote","arguments":["C",1]}\n'
