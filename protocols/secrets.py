"""Secrets (the API key, the JWT) and the few things pxnode does with them.

A ``Secret`` can travel anywhere inside the process (messages, config, reprs)
because every way of turning it into text prints ``Secret('***')``. The value
comes out only through ``reveal()``, so each place that puts a secret on the
wire is greppable. It refuses to be serialised (msgspec, json, pickle) so it can
never reach a tape, a metric or another machine by accident.
"""

from __future__ import annotations

import base64
import hmac
import math
import re
from typing import NoReturn

import msgspec

from protocols.errors import AuthFailed

REDACTED = "***"


class Secret:
    """A string that never shows itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The value itself: call only where it goes on the wire."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, so a comparison cannot be timed into a guess.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    # Immutable, so copies may share it (``copy`` would otherwise try ``__reduce__``).
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: object) -> Secret:
        return self


def redact(text: str, *secrets: Secret | str) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``.

    For text that comes from outside and might echo a secret back (a gateway
    error message, an exception from a library) before it is logged or raised.
    Longer secrets go first so one that contains another is removed whole.
    """
    values = (s.reveal() if isinstance(s, Secret) else s for s in secrets)
    for value in sorted(filter(None, values), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


_USERINFO = re.compile(r"(?<=://)[^/\s@'\"]+@")


def redact_userinfo(text: str) -> str:
    """``text`` with the credentials of every URL in it (``scheme://user:pass@``) replaced
    by ``***``: a configured URL may carry them, and any message may quote a URL."""
    return _USERINFO.sub(f"{REDACTED}@", text)


class _Claims(msgspec.Struct, frozen=True):
    exp: float | None = None


_CLAIMS = msgspec.json.Decoder(_Claims)


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (unix seconds) of a JWT, read without verifying it; None if absent.

    pxnode never verifies the signature (only the gateway can); it reads ``exp``
    to know when to refresh. Anything malformed raises ``AuthFailed`` whose
    message never contains the token.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthFailed(f"malformed JWT: {len(parts)} segments, expected 3")
    payload = parts[1]
    try:
        raw = base64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_", validate=True)
        exp = _CLAIMS.decode(raw).exp
    except (ValueError, msgspec.DecodeError) as exc:
        # ValueError covers bad base64 (binascii.Error) and non-ASCII text;
        # msgspec.ValidationError is a DecodeError. The cause is dropped: its
        # message may quote part of the token.
        kind = "claims" if isinstance(exc, msgspec.ValidationError) else "payload"
        raise AuthFailed(f"malformed JWT: unreadable {kind}") from None
    if exp is None:
        return None
    if not math.isfinite(exp) or exp <= 0:
        raise AuthFailed("malformed JWT: exp is not a positive finite time")
    return exp
