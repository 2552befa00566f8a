"""pxnode.listen: failed accepts are counted and waited out; a handler error ends one connection."""

from __future__ import annotations

import errno
import socket
from collections import Counter

import anyio
import anyio.abc
import pytest
import trio
import trio.testing
from anyio.streams.stapled import MultiListener

from protocols.errors import ConfigError
from pxnode.listen import bind, serve
from pxnode.testing import socket_pair


class OutOfDescriptors(anyio.abc.SocketListener):
    """A listener whose first ``failures`` accepts fail with EMFILE, then hands out pipes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[float] = []
        self.served: list[anyio.abc.ByteStream] = []

    async def accept(self) -> anyio.abc.SocketStream:
        self.attempts.append(trio.current_time())
        if len(self.attempts) <= self.failures:
            raise OSError(errno.EMFILE, "Too many open files")
        if len(self.attempts) > self.failures + 2:
            await trio.sleep_forever()
        client, server = socket_pair()
        self.served.append(client)
        return server  # type: ignore[return-value]  # a byte stream is all a handler reads

    async def aclose(self) -> None:
        pass

    @property
    def _raw_socket(self) -> socket.socket:
        raise NotImplementedError


@pytest.mark.trio
async def test_emfile_is_counted_and_waited_out_doubling_to_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = OutOfDescriptors(failures=6)
    counters: Counter[str] = Counter()
    handled: list[str] = []

    async def handler(stream: anyio.abc.SocketStream) -> None:
        handled.append("ok")
        if len(handled) == 1:
            raise RuntimeError("a handler bug")

    with trio.move_on_after(10):
        await serve(MultiListener([listener]), handler, counters)
    gaps = [round(b - a, 3) for a, b in zip(listener.attempts, listener.attempts[1:], strict=False)]
    assert gaps[:6] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert counters["accept_errors"] == 6
    assert handled == ["ok", "ok"]  # the failing handler ended only its own connection
    assert counters["handler_errors"] == 1
    for client in listener.served:
        await client.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("host", "port", "message"),
    [
        ("127.0.0.1", 70000, "metrics: port must be 0..65535, got 70000"),
        ("127.0.0.1", -5, "metrics: port must be 0..65535, got -5"),
        ("nosuchhost.invalid", 0, "metrics: cannot listen on nosuchhost.invalid:0:"),
    ],
)
async def test_bind_failures_are_one_config_error(
    anyio_backend: str, host: str, port: int, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        await bind(host, port, "metrics")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
