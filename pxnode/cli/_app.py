"""The ``pxnode`` app and what every command shares (typer).

Every command runs under trio (asyncio with ``--nats``: nats-py needs it)
through ``execute``, which turns SIGINT/SIGTERM
into a *graceful* stop request (the command leaves its ``open_node`` block, so
the supervisor tree shuts down in order and outputs are flushed); a second
signal cancels outright. Errors pxnode raises on purpose print as one line,
``pxnode: error: ...``, with exit code 2 (``fail``); nothing prints a traceback.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec
import typer
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

from actors.nats_bridge import NatsConfig
from protocols.errors import AuthFailed, Escalation, PxError, TapeError
from protocols.secrets import redact_userinfo
from protocols.timeframes import parse_timeframe
from supervisors.supervisor import unwrap


def _plain_flags(params: list[Any]) -> list[Any]:
    """A flag takes no value, so its help shows none (typer would print ``<bool>``)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))


class _Command(TyperCommand):
    """Help as commands are written: ``pxnode record [OPTIONS] TAPE`` (typer says ``{TAPE}``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces: list[str] = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


class _Typer(typer.Typer):
    def command(
        self, *args: Any, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _Typer(
    name="pxnode",
    help="Realtime market-data node for the ProjectX Gateway.",
    no_args_is_help=True,
    cls=_Group,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"pxnode {version('pxnode')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_show_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Realtime market-data node for the ProjectX Gateway."""


LogLevel = Annotated[
    str,
    typer.Option(
        "--log-level", help="debug, info, warning or error.", show_default=True, metavar="LEVEL"
    ),
]
StreamName = Annotated[str, typer.Option("--stream", help="JetStream stream name.", metavar="NAME")]


class Stopping:
    """Set by the first SIGINT/SIGTERM; commands wait on it to stop gracefully."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.exit_code = 0


def execute(
    command: Callable[[Stopping], Awaitable[int]],
    log_level: str = "warning",
    *,
    backend: str = "trio",
) -> None:
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        fail(f"unknown log level {log_level!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = anyio.run(_with_signals, command, backend=backend)
    except BaseExceptionGroup as group:
        error = unwrap(group)
        if isinstance(error, PxError):
            fail(_message(error))
        raise
    except PxError as error:
        fail(_message(error))
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


def _message(error: PxError) -> str:
    """A failure no restart can fix (an unwritable tape, refused credentials) is told as
    itself, not as the escalation it caused."""
    if isinstance(error, Escalation) and isinstance(error.__cause__, TapeError | AuthFailed):
        return str(error.__cause__)
    return str(error)


async def _with_signals(command: Callable[[Stopping], Awaitable[int]]) -> int:
    stopping = Stopping()
    code = 0  # stays 0 if a second signal cancels the command
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    if stopping.event.is_set():
                        tg.cancel_scope.cancel()  # a second signal: stop now
                        return
                    stopping.exit_code = 130 if signum == signal.SIGINT else 0
                    stopping.event.set()

        tg.start_soon(watch)
        code = await command(stopping)
        tg.cancel_scope.cancel()
    return stopping.exit_code or code


async def unless_stopped(stopping: Stopping, step: Callable[[], Awaitable[None]]) -> bool:
    """Run ``step``, abandoned at the first signal (True if it ran to its end): for the
    steps with nothing to drain (a replay, the preflight)."""
    async with anyio.create_task_group() as tg:

        async def abandon_on_signal() -> None:
            await stopping.event.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(abandon_on_signal)
        await step()
        tg.cancel_scope.cancel()
    return not stopping.event.is_set()


def fail(message: str) -> None:
    typer.echo(f"pxnode: error: {redact_userinfo(message)}", err=True)
    raise typer.Exit(2)


def check_out(out: Path) -> None:
    """``--out`` names a file in a directory that exists: found now, not after the work."""
    try:
        if out.is_dir():
            fail(f"--out {str(out)!r} is a directory")
        if not out.parent.is_dir():
            fail(f"--out {str(out)!r}: no such directory {str(out.parent)!r}")
    except OSError as error:  # not even looked at: permission, a name too long
        fail(f"--out {str(out)!r}: {error.strerror or error}")


def timeframe_names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        fail("--timeframes needs at least one timeframe, e.g. 1min,4hr")
    try:
        return [parse_timeframe(name).name for name in names]
    except PxError as error:
        fail(str(error))
        raise


def contract_ids(values: list[str] | None) -> list[str]:
    """Each contract once, in order (``--contracts MNQ --contracts MNQ`` broke the sim)."""
    parts = (part.strip() for value in values or [] for part in value.split(","))
    return list(dict.fromkeys(part for part in parts if part))


def nats_config(url: str, base: NatsConfig | None = None, **changes: str) -> NatsConfig:
    """``base`` (a config file's ``[nats]``, else the defaults) with ``--nats URL`` and
    the other flags given: what the file set and no flag changed is kept."""
    settings = msgspec.structs.asdict(base if base is not None else NatsConfig())
    try:
        return NatsConfig(**{**settings, **changes, "url": url})
    except PxError as error:
        fail(str(error))
        raise


def main() -> None:
    app()
