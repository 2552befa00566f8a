"""The durable's claim: one consuming process per durable, decided without a race.

Theory of operation
-------------------
JetStream shares a durable's messages among everyone pulling from it, so two
processes on one durable would each get a part of the stream. Before it pulls,
a source claims its durable on a core NATS subject (``claim_subject``):

1. it subscribes there, answering every request with its ticket (a start time
   and a random tail) and whether it holds the durable yet;
2. then it asks there once, with its ticket, and listens for ``WINDOW`` seconds;
3. it gives way (``DurableInUse``) if it heard of a holder, or of another
   claimant with an older ticket, whether as an answer to its request or as a
   request to itself; else it holds the durable from then on.

Why two processes starting together cannot both win: a request reaches every
subscription the server had before it, and each process subscribes before it
asks, so at least one of the two requests reaches the other process; that
process answers it, so each has heard of the other, and both compare the same
two tickets. A holder answers while its connection lives: a crashed holder's
claim goes with its connection, and its durable is free at once.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import Any

import anyio
import msgspec

from .bus import DurableInUse
from .config import NatsConfig

WINDOW = 0.5
"""Seconds a claimant listens for rivals: round trips to the server take far less."""


class ClaimNote(msgspec.Struct, frozen=True):
    """What a claimant says on the claim subject, asking or answering."""

    ticket: str
    """Sortable: the older claim wins (both sides compare the same two strings)."""
    who: str
    holds: bool = False


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(ClaimNote)


def claim_subject(config: NatsConfig) -> str:
    """Where the process consuming ``config.durable`` answers (outside the stream's ``px.>``)."""
    return f"pxnode.durable.{config.stream}.{config.durable}"


async def claim(client: Any, config: NatsConfig) -> None:
    """Claim ``config.durable`` for as long as ``client`` is open (see above);
    ``DurableInUse`` if another process holds it or claimed it first."""
    subject = claim_subject(config)
    me = ClaimNote(
        ticket=f"{time.time_ns():020d}-{secrets.token_hex(8)}",
        who=f"pid {os.getpid()} on {socket.gethostname()}",
    )
    heard: list[ClaimNote] = []
    holds = False

    def hear(data: bytes) -> None:
        try:
            note = _DECODER.decode(data)
        except msgspec.DecodeError:
            return  # not a claimant's: nothing to weigh
        if note.ticket != me.ticket:
            heard.append(note)

    async def on_request(msg: Any) -> None:
        hear(msg.data)
        if msg.reply:
            await msg.respond(_ENCODER.encode(msgspec.structs.replace(me, holds=holds)))

    async def on_answer(msg: Any) -> None:
        hear(msg.data)

    claims = await client.subscribe(subject, cb=on_request)
    answers = await client.subscribe(client.new_inbox(), cb=on_answer)
    await client.publish(subject, _ENCODER.encode(me), reply=answers.subject)
    await client.flush()
    await anyio.sleep(WINDOW)
    await answers.unsubscribe()
    rival = next((note for note in heard if note.holds or note.ticket < me.ticket), None)
    if rival is not None:
        await claims.unsubscribe()
        raise DurableInUse(
            f"NATS durable {config.durable!r} of stream {config.stream!r} is in use by another "
            f"consumer ({rival.who}): give each consumer its own --durable (consumers sharing "
            "one would each get a part of the stream)"
        )
    holds = True
