"""Output lines that a full stdout can never stall the event loop with.

``demo --json`` piped into a reader that stopped reading fills the pipe, and
the next ``write`` blocks the calling thread: on the event loop's thread that
freezes the whole node (the metrics endpoint stops answering, the hubs time
out). ``Lines`` hands each line to a bounded queue that a daemon thread of its
own writes out; when the queue is full the line is dropped and counted, like
any other conflating consumer of the node. A stdout that is gone for good (the
reader closed the pipe) ends the writer; later lines are counted as dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from types import TracebackType
from typing import IO, Final

log = logging.getLogger(__name__)

CAPACITY: Final = 64
"""Lines held while the reader is slow (about a minute of ``--json`` snapshots)."""
CLOSE_WAIT: Final = 1.0
"""How long closing waits for the queued lines to be written (seconds)."""


class Lines:
    """Non-blocking line output to ``out``; ``dropped`` counts the lines that found no room."""

    def __init__(self, out: IO[str], *, capacity: int = CAPACITY) -> None:
        self.refused = 0  # counted on the caller's thread
        self.lost = 0  # counted on the writer's thread (queued, then stdout was gone)
        self.written = 0
        self._out = out
        self._fd = _descriptor(out)
        self._encoding = getattr(out, "encoding", None) or "utf-8"
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=capacity)
        self._broken = threading.Event()
        self._thread = threading.Thread(target=self._write_all, name="pxnode-lines", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        return self.refused + self.lost

    def write(self, line: str) -> None:
        """Queue ``line`` (a newline is added) or count it dropped; never blocks."""
        if self._broken.is_set():
            self.refused += 1
            return
        try:
            self._queue.put_nowait(line + "\n")
        except queue.Full:
            self.refused += 1

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Let the writer finish what is queued for up to ``wait`` seconds, then leave it."""
        # A full queue means the writer is stuck on a full stdout: it is a daemon, it dies with us.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(wait)
        if self.dropped:
            log.warning("%d output lines dropped: stdout was not being read", self.dropped)

    def __enter__(self) -> Lines:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _write_all(self) -> None:
        while (line := self._queue.get()) is not None:
            try:
                self._emit(line)
            except (OSError, ValueError):  # a closed pipe or a closed file: nobody reads any more
                self._broken.set()
                self.lost += 1 + self._discard_queued()
                return
            self.written += 1

    def _discard_queued(self) -> int:
        count = 0
        with contextlib.suppress(queue.Empty):
            while self._queue.get_nowait() is not None:
                count += 1
        return count

    def _emit(self, line: str) -> None:
        if self._fd is None:
            self._out.write(line)
            self._out.flush()
            return
        # Straight to the descriptor: a write blocked here holds no lock of the
        # interpreter's stdout, whose flush at exit would otherwise wait for it.
        data = memoryview(line.encode(self._encoding, "replace"))
        while data:
            data = data[os.write(self._fd, data) :]


def _descriptor(out: IO[str]) -> int | None:
    """``out``'s file descriptor after flushing what it buffered, or None (a StringIO)."""
    try:
        fd = out.fileno()
    except (OSError, ValueError, AttributeError):
        return None
    out.flush()
    return fd
