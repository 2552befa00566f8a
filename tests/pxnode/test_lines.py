"""``Lines``: a stdout nobody reads costs counted dropped lines, never a blocked caller."""

from __future__ import annotations

import io
import os
import threading
import time

from pxnode.lines import Lines


class Stuck(io.StringIO):
    """A stream whose writes block until ``release`` is set (a pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait()
        return super().write(text)


def test_lines_are_written_in_order() -> None:
    out = io.StringIO()
    with Lines(out) as lines:
        for i in range(50):  # fewer than the queue holds
            lines.write(f"line {i}")
    assert out.getvalue().splitlines() == [f"line {i}" for i in range(50)]
    assert lines.written == 50 and lines.dropped == 0


def test_a_stuck_stream_never_blocks_the_writer_and_drops_are_counted() -> None:
    out = Stuck()
    lines = Lines(out, capacity=4)
    start = time.monotonic()
    for i in range(1000):
        lines.write(f"line {i}")
    assert time.monotonic() - start < 0.5
    # one line is with the writer thread, four wait in the queue, the rest found no room
    assert 995 <= lines.dropped <= 996
    lines.close(wait=0.05)  # returns although the writer is still stuck
    out.release.set()


def test_a_closed_pipe_ends_the_writer_and_counts_what_it_held() -> None:
    read, write = os.pipe()
    os.close(read)
    with open(write, "w") as out:
        lines = Lines(out)
        for i in range(10):
            lines.write(f"line {i}")
        lines.close()
    assert lines.written == 0 and lines.dropped == 10
