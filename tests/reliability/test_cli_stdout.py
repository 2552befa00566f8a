"""Issue 12 item 7: ``demo --json`` into a pipe nobody reads must not freeze the node.

Before, the snapshot line was written on the event loop's thread: once the pipe
was full the write blocked the loop and /metrics stopped answering.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import time

import httpx

from tests.subprocess_env import PXNODE, strict_env

F_SETPIPE_SZ = 1031  # Linux; the smallest pipe is one page


def test_a_stdout_nobody_reads_never_freezes_the_node() -> None:
    read, write = os.pipe()
    fcntl.fcntl(write, F_SETPIPE_SZ, 4096)
    os.write(write, b"x" * 4096)  # full before the node writes its first line
    proc = subprocess.Popen(
        [*PXNODE, "demo", "--json", "--metrics-port", "0"],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        env=strict_env(),
    )
    os.close(write)
    try:
        assert proc.stderr is not None
        announced = re.search(r"metrics at (\S+)", proc.stderr.readline())
        assert announced, "no metrics line"
        url = announced.group(1)
        for _ in range(4):
            reply = httpx.get(url, timeout=2.0)
            assert reply.status_code == 200 and "pxnode_" in reply.text
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "Fatal Python error" not in err
    finally:
        os.close(read)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
