"""The one error tree of pxnode.

Every exception pxnode raises on purpose derives from ``PxError`` so an embedding
application can catch "anything pxnode meant" with one clause, and nothing here
ever carries a secret in its message (tokens and keys are redacted before they
reach an exception).
"""

from __future__ import annotations


class PxError(Exception):
    """Base of every error pxnode raises on purpose."""


class ConfigError(PxError):
    """A configuration value is missing or invalid."""


class ProtocolError(PxError):
    """Bytes from a peer violate the SignalR or ProjectX protocol.

    Raised by the sans-IO codecs; the connection that owns the codec decides
    whether the error is fatal for the socket (it never is for the node).
    """


class MessageTooLarge(ProtocolError):
    """A SignalR message exceeded the configured maximum size."""


class MailboxFull(PxError):
    """A FAIL-policy mailbox was full when a message was told to it."""


class MailboxClosed(PxError):
    """A message was told to an actor whose mailbox is closed (the actor stopped)."""


class AskTimeout(PxError, TimeoutError):
    """An ``ask`` got no reply within its timeout."""


class Escalation(PxError):
    """A supervisor gave up on its children and hands the failure to its parent.

    ``reason`` says why (restart intensity exceeded, breaker gave up, significant
    child exited abnormally); ``__cause__`` is the last child failure, if any.
    """

    def __init__(self, supervisor: str, reason: str) -> None:
        super().__init__(f"supervisor {supervisor!r} escalated: {reason}")
        self.supervisor = supervisor
        self.reason = reason


class ConnectionLost(PxError):
    """A hub connection failed or could not be made; the supervisor decides what next.

    ``status`` is the HTTP status when the gateway refused the negotiation or
    the upgrade (401: the token was refused). The message never holds a secret.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthFailed(PxError):
    """The gateway rejected the credentials or the token; retrying hot would not help."""


class GatewayError(PxError):
    """A REST call to the gateway failed (HTTP status or success=false)."""

    def __init__(self, message: str, *, status: int | None = None, error_code: int | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class TapeError(PxError):
    """A tape file cannot be opened or read at all (single bad lines are counted, not raised)."""


class UnknownSeries(PxError, LookupError):
    """A contract or timeframe the node does not build bars for was asked for."""


class NotReady(PxError, TimeoutError):
    """``node.ready()`` timed out; the message names what is not ready yet."""
