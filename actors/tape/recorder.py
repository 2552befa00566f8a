"""Tapes: every received hub message as one JSON line, written and read back.

Tape format (docs/rules.md), one line per hub invocation, UTF-8, ``\\n``-terminated::

    {"t":1737469800.123,"hub":"market","target":"GatewayTrade","arguments":["CON...",[...]]}

``t`` is the receive time (unix seconds), ``arguments`` the JSON array exactly
as the gateway sent it. The array travels as ``msgspec.Raw`` from the socket to
the tape and back, so it is never decoded or re-encoded on the way and a replay
judges the very bytes the live node judged. The one exception: whitespace
newlines between JSON tokens (legal, never seen from the real gateway) would
break the line framing, so such an array is re-written without whitespace;
its values are unchanged.

Reading: the tape is read in large binary chunks cut at the last newline, and
each line of a chunk is decoded in one pass. One bad line fails that pass, so
only then is the chunk decoded line by line, counting. A line that is not JSON
or not the shape above (``t`` a finite number >= 0, ``hub`` "market" or "user",
``target`` a string, ``arguments`` an array) or nested beyond msgspec's depth
limit (1000) is counted as malformed and skipped; blank lines are not
records and are neither counted nor malformed. A line still without its
newline after ``MAX_LINE`` bytes is malformed too and skipped up to the next
newline, which bounds the memory a reader needs whatever the file holds.

The recorder sees only hub messages (never config, tokens or headers), so no
secret can reach a tape through it.
"""

from __future__ import annotations

import contextlib
from codecs import BOM_UTF8
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

import msgspec

from protocols.errors import TapeError
from protocols.interfaces import ActorContext, Inbox, Ref
from protocols.messages import CountersReported, Flush, HubMessageReceived, Request, Stop, Tick

CHUNK_SIZE = 1 << 20
"""Bytes read per chunk: per-call costs vanish, and the chunk still fits in cache."""
MAX_LINE = 16 << 20
"""Longest tape line accepted; the gateway's own frame cap is far below it."""
BUFFER_SIZE = 256 << 10
"""Bytes the recorder buffers before it writes (it also flushes on Tick, Flush and exit)."""
BATCH_LIMIT = 1024


class TapeLine(msgspec.Struct, frozen=True, gc=False):
    """One tape record; ``arguments`` stays raw (byte-exact) and must be a JSON array."""

    t: Annotated[float, msgspec.Meta(ge=0.0, lt=1e11)]
    hub: Literal["market", "user"]
    target: str
    arguments: msgspec.Raw


_DECODER = msgspec.json.Decoder(TapeLine)
_ENCODER = msgspec.json.Encoder()
_OPEN_BRACKET = 0x5B  # "[": Raw spans the value only, so an array starts with it


def _is_array(raw: msgspec.Raw) -> bool:
    return len(raw) > 0 and memoryview(raw)[0] == _OPEN_BRACKET


# ---------------------------------------------------------------------- reading


@dataclass(slots=True)
class TapeCounts:
    """What a reader has seen so far: records (non-blank lines), the malformed among them,
    and the bytes read (a progress bar's measure)."""

    lines: int = 0
    malformed: int = 0
    bytes_read: int = 0


def read_tape(
    path: str | Path, counts: TapeCounts | None = None
) -> Generator[list[TapeLine], None, None]:
    """The good records of a tape in file order, one list per chunk (empty while a long
    line is still being read); ``counts`` is kept current.

    Raises ``TapeError`` if the file cannot be opened or read (bad lines never raise).
    """
    counts = counts if counts is not None else TapeCounts()
    tape = open_tape(path)
    try:
        yield from _read_chunks(tape, path, counts)
    finally:
        tape.close()


def open_tape(path: str | Path) -> BinaryIO:
    """The tape file, opened unbuffered for reading; ``TapeError`` (one line) if it cannot be."""
    try:
        return open(path, "rb", buffering=0)
    except OSError as error:
        raise TapeError(f"cannot open tape {str(path)!r}: {error.strerror or error}") from None


def _read_chunks(tape: BinaryIO, path: str | Path, counts: TapeCounts) -> Iterator[list[TapeLine]]:
    tail = b""
    skipping = False  # inside a line already counted as too long
    first = True
    while True:
        try:
            chunk = tape.read(CHUNK_SIZE)
        except OSError as error:
            raise TapeError(f"cannot read tape {str(path)!r}: {error.strerror or error}") from None
        if not chunk:
            break
        counts.bytes_read += len(chunk)
        if first:  # a tape saved by a Windows editor starts with a UTF-8 BOM: not its first line's
            chunk, first = chunk.removeprefix(BOM_UTF8), False
        cut = chunk.rfind(b"\n")
        if cut < 0:
            if not skipping:
                tail += chunk
                if len(tail) > MAX_LINE:
                    counts.lines += 1
                    counts.malformed += 1
                    tail, skipping = b"", True
            yield []  # every chunk reaches the reader: endless input without newlines stops
            continue
        if skipping:
            start = chunk.find(b"\n") + 1
            body, skipping = chunk[start : cut + 1], False
        else:
            body = tail + chunk[: cut + 1]
        tail = chunk[cut + 1 :]
        if body:
            yield decode_chunk(body, counts)
    if tail and not skipping:
        yield decode_chunk(tail, counts)  # a last line without its newline (a cut-off write)


def decode_chunk(body: bytes, counts: TapeCounts) -> list[TapeLine]:
    """Decode whole lines, each on its own; line by line, counting, if any fails.

    Not ``decode_lines``: it parses a stream, taking two records on one line and
    one record over two lines, so its count of records could not say that every
    line held one (a blank line once cancelled a line of two records out).
    Splitting first costs about what that count did (measured on a 1M-trade tape).
    """
    decode = _DECODER.decode
    try:
        records = [decode(line) for line in body.split(b"\n") if line]
    except (msgspec.DecodeError, RecursionError):
        return _decode_each(body, counts)  # a blank line of spaces comes here too: rare
    good = [r for r in records if _is_array(r.arguments)]
    counts.lines += len(records)
    counts.malformed += len(records) - len(good)
    return good


def _decode_each(body: bytes, counts: TapeCounts) -> list[TapeLine]:
    good: list[TapeLine] = []
    decode = _DECODER.decode
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        counts.lines += 1
        try:
            record = decode(line)
        except (msgspec.DecodeError, RecursionError):  # not JSON, not the shape, too deep
            counts.malformed += 1
            continue
        if _is_array(record.arguments):
            good.append(record)
        else:
            counts.malformed += 1
    return good


def encode_line(msg: HubMessageReceived) -> bytes | None:
    """``msg`` as one tape line (with its newline), or None if it cannot be one."""
    arguments = msg.arguments
    if not (isinstance(msg.received_at, float | int) and 0.0 <= msg.received_at < 1e11):
        return None
    if msg.hub not in ("market", "user") or not isinstance(msg.target, str):
        return None
    if not isinstance(arguments, msgspec.Raw) or not _is_array(arguments):
        return None
    data = bytes(arguments)
    if b"\n" in data or b"\r" in data:
        try:
            arguments = msgspec.Raw(msgspec.json.format(data, indent=-1))
        except msgspec.DecodeError:
            return None
    line = TapeLine(float(msg.received_at), msg.hub, msg.target, arguments)
    return _ENCODER.encode(line) + b"\n"


# ---------------------------------------------------------------------- writing


class TapeRecorder:
    """Appends every ``HubMessageReceived`` of its inbox to the tape at ``path``.

    Lines go through a ``BUFFER_SIZE`` write buffer, flushed on every Tick (the
    node's clock ticks the recorder, so a ``kill -9`` loses at most one tick
    interval), on a ``Flush`` ask (the reply, the cumulative counters, comes
    once the data reached the file) and when the inbox ends or a ``Stop``
    arrives; then the file is closed. A tape that cannot be opened, written or
    flushed (a missing directory, a full disk) raises ``TapeError``: no restart
    can fix that, so the node stops with that one line.

    File I/O is synchronous on purpose: a buffered write is a memcpy and a
    flush one syscall, far cheaper than a thread hop, and nothing else runs in
    this actor.
    """

    def __init__(self, path: str | Path, buffer_size: int = BUFFER_SIZE) -> None:
        self.path = Path(path)
        self._buffer_size = buffer_size
        self.counters = dict.fromkeys(
            ("lines_written", "bytes_written", "lines_unrecordable", "messages_ignored"), 0
        )

    def __repr__(self) -> str:
        return f"<TapeRecorder {str(self.path)!r} lines={self.counters['lines_written']}>"

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        stats = ctx.ref("stats")
        tape = self._open()
        try:
            ctx.report_healthy()
            await self._record(tape, inbox, stats)
            self._flush(tape)
        except BaseException:
            # The error in flight says it all; closing would only try the same flush again.
            with contextlib.suppress(OSError):
                tape.close()
            raise
        self._close(tape)
        self._report(stats)

    async def _record(self, tape: BinaryIO, inbox: Inbox[Any], stats: Ref[Any]) -> None:
        while batch := await inbox.receive_batch(BATCH_LIMIT):
            for msg in batch:
                if type(msg) is HubMessageReceived:
                    self.on_hub_message(tape, msg)
                elif isinstance(msg, Tick):
                    self._flush(tape)
                    self._report(stats)
                elif isinstance(msg, Request) and isinstance(msg.body, Flush):
                    self._flush(tape)
                    msg.reply.tell_nowait(dict(self.counters))
                elif isinstance(msg, Stop):
                    return
                else:
                    self.counters["messages_ignored"] += 1

    def _open(self) -> BinaryIO:
        try:
            return open(self.path, "ab", buffering=self._buffer_size)
        except OSError as error:
            raise TapeError(f"cannot open tape {str(self.path)!r}: {error.strerror}") from None

    def on_hub_message(self, tape: BinaryIO, msg: HubMessageReceived) -> None:
        line = encode_line(msg)
        if line is None:
            self.counters["lines_unrecordable"] += 1
            return
        try:
            tape.write(line)
        except OSError as error:
            raise TapeError(f"cannot write tape {str(self.path)!r}: {error.strerror}") from None
        self.counters["lines_written"] += 1
        self.counters["bytes_written"] += len(line)

    def _flush(self, tape: BinaryIO) -> None:
        try:
            tape.flush()
        except OSError as error:
            raise TapeError(f"cannot write tape {str(self.path)!r}: {error.strerror}") from None

    def _close(self, tape: BinaryIO) -> None:
        try:
            tape.close()
        except OSError as error:
            raise TapeError(f"cannot write tape {str(self.path)!r}: {error.strerror}") from None

    def _report(self, stats: Ref[Any]) -> None:
        # Cumulative counters: a report that cannot be queued is carried by the next one.
        stats.try_tell(CountersReported(source="recorder", counters=dict(self.counters)))
