"""Session tokens of the simulated gateway: real HS256 JWTs, checked for real.

Clients read the expiry from the token's ``exp`` claim, so the sim mints genuine
JWTs (header.payload.signature, base64url, HMAC-SHA256) rather than opaque
strings. The key is derived from the seed: two runs with one seed issue tokens
that verify on either, and no key is ever configured, logged or printed.

Faults act on every token at once through generations: each token carries the
generation it was minted in (``gen``); ``expire_all``/``revoke_all`` start a new
generation and remember why the old one ended, so the next check of an old token
fails with that reason. Logout revokes one token by its ``jti`` (a bounded set:
a client that logs in and out forever cannot grow it without limit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Final, Literal, TypeAlias

import msgspec

Rejection: TypeAlias = Literal["missing", "malformed", "signature", "expired", "revoked"]

_MAX_LOGGED_OUT: Final = 4096
_HEADER: Final = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


class Claims(msgspec.Struct, frozen=True):
    sub: str
    jti: int
    gen: int
    iat: int
    exp: int
    iss: str = "pxnode-gateway-sim"


_ENCODE: Final = msgspec.json.Encoder()
_DECODE: Final = msgspec.json.Decoder(Claims)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


class TokenAuthority:
    """Mints and checks the tokens of one simulated gateway.

    ``clock`` returns unix seconds; ``ttl`` is each token's lifetime in seconds.
    """

    def __init__(self, seed: int, ttl: float, clock: Callable[[], float]) -> None:
        self._key = hashlib.sha256(f"pxnode-gateway-sim/{seed}".encode()).digest()
        self._ttl = ttl
        self._clock = clock
        self._jti = 0
        self._ended: list[Rejection] = []  # why generation i ended; len = current generation
        self._logged_out: dict[int, None] = {}  # insertion-ordered: oldest evicted first

    def __repr__(self) -> str:
        return f"<TokenAuthority generation={len(self._ended)}>"

    @property
    def generation(self) -> int:
        return len(self._ended)

    def mint(self, user: str) -> str:
        now = int(self._clock())
        self._jti += 1
        claims = Claims(user, self._jti, self.generation, now, now + max(1, int(self._ttl)))
        body = _HEADER + b"." + _b64(_ENCODE.encode(claims))
        return (body + b"." + _b64(self._sign(body))).decode()

    def check(self, token: str | None) -> Claims | Rejection:
        """The token's claims if it is valid now, else why not."""
        if not token:
            return "missing"
        raw = token.encode("ascii", "replace")
        body, _, signature = raw.rpartition(b".")
        try:
            payload = body.split(b".")[1]
            good = hmac.compare_digest(_unb64(signature), self._sign(body))
            claims = _DECODE.decode(_unb64(payload)) if good else None
        except (IndexError, ValueError, msgspec.DecodeError):
            return "malformed"
        if claims is None:
            return "signature"
        if claims.gen < self.generation:
            return self._ended[claims.gen]
        if claims.jti in self._logged_out:
            return "revoked"
        if claims.exp <= self._clock():
            return "expired"
        return claims

    def refresh(self, token: str | None) -> str | Rejection:
        """A fresh token for the holder of a valid ``token`` (Auth/validate)."""
        claims = self.check(token)
        return claims if isinstance(claims, str) else self.mint(claims.sub)

    def logout(self, claims: Claims) -> None:
        self._logged_out[claims.jti] = None
        if len(self._logged_out) > _MAX_LOGGED_OUT:
            del self._logged_out[next(iter(self._logged_out))]

    def expire_all(self) -> None:
        self._ended.append("expired")

    def revoke_all(self) -> None:
        self._ended.append("revoked")

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()
