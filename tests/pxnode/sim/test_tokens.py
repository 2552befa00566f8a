"""Sim tokens are real HS256 JWTs: exp readable, signature checked, faults act on all."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from pxnode.sim.tokens import Claims, TokenAuthority


class Clock:
    def __init__(self) -> None:
        self.now = 1_764_000_000.0

    def __call__(self) -> float:
        return self.now


def part(token: str, i: int) -> dict[str, object]:
    raw = token.split(".")[i]
    return dict(json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))))


def test_a_token_is_an_hs256_jwt_with_exp() -> None:
    clock = Clock()
    authority = TokenAuthority(1, 3600, clock)
    token = authority.mint("demo")
    assert part(token, 0) == {"alg": "HS256", "typ": "JWT"}
    claims = part(token, 1)
    assert claims["sub"] == "demo" and claims["exp"] == int(clock.now) + 3600
    key = hashlib.sha256(b"pxnode-gateway-sim/1").digest()
    body, _, signature = token.rpartition(".")
    expected = base64.urlsafe_b64encode(hmac.new(key, body.encode(), "sha256").digest())
    assert signature == expected.rstrip(b"=").decode()
    checked = authority.check(token)
    assert isinstance(checked, Claims) and checked.sub == "demo"
    assert TokenAuthority(1, 3600, clock).check(token) == checked  # same seed, same key


def test_expiry_follows_the_clock() -> None:
    clock = Clock()
    authority = TokenAuthority(1, 60, clock)
    token = authority.mint("demo")
    clock.now += 59
    assert isinstance(authority.check(token), Claims)
    clock.now += 1
    assert authority.check(token) == "expired"
    assert authority.refresh(token) == "expired"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("garbage", "malformed"),
        ("a.b", "malformed"),
        ("a.b.c", "malformed"),
        ("é.ü.ß", "malformed"),
        ("x" * 10_000, "malformed"),
    ],
)
def test_bad_tokens_are_named_not_raised(token: str | None, reason: str) -> None:
    assert TokenAuthority(1, 60, Clock()).check(token) in (reason, "signature")


def test_a_tampered_or_foreign_token_fails_the_signature() -> None:
    clock = Clock()
    token = TokenAuthority(1, 60, clock).mint("demo")
    assert TokenAuthority(2, 60, clock).check(token) == "signature"
    header, _, signature = token.split(".")
    forged = base64.urlsafe_b64encode(b'{"sub":"admin","jti":1,"gen":0,"iat":0,"exp":9999999999}')
    assert (
        TokenAuthority(1, 60, clock).check(f"{header}.{forged.decode()}.{signature}") == "signature"
    )


def test_expire_all_and_revoke_all_end_every_older_token() -> None:
    authority = TokenAuthority(1, 60, Clock())
    old = authority.mint("demo")
    authority.expire_all()
    assert authority.check(old) == "expired"
    middle = authority.mint("demo")
    authority.revoke_all()
    assert authority.check(old) == "expired" and authority.check(middle) == "revoked"
    fresh = authority.refresh(authority.mint("demo"))
    assert isinstance(fresh, str) and isinstance(authority.check(fresh), Claims)


def test_logout_revokes_one_token_and_the_set_is_bounded() -> None:
    authority = TokenAuthority(1, 60, Clock())
    keep, drop = authority.mint("demo"), authority.mint("demo")
    claims = authority.check(drop)
    assert isinstance(claims, Claims)
    authority.logout(claims)
    assert authority.check(drop) == "revoked" and isinstance(authority.check(keep), Claims)
    for _ in range(5000):
        extra = authority.check(authority.mint("demo"))
        assert isinstance(extra, Claims)
        authority.logout(extra)
    assert len(authority._logged_out) <= 4096


def test_no_secret_in_repr() -> None:
    authority = TokenAuthority(1, 60, Clock())
    token = authority.mint("demo")
    assert token not in repr(authority) and "key" not in repr(authority)
