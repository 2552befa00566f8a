"""Secret never shows itself; jwt_expiry reads exp and never quotes the token."""

from __future__ import annotations

import base64
import copy
import json
import logging
import pickle

import msgspec
import pytest

from protocols.errors import AuthFailed, PxError
from protocols.messages import TokenIssued
from protocols.secrets import REDACTED, Secret, jwt_expiry, redact

VALUE = "eyJhbGciOi.TOP-SECRET-VALUE.sig"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(payload: bytes, header: bytes = b'{"alg":"HS256","typ":"JWT"}') -> str:
    return f"{b64url(header)}.{b64url(payload)}.{b64url(b'signature')}"


# -------------------------------------------------------------------- Secret


def test_every_text_form_is_redacted() -> None:
    secret = Secret(VALUE)
    forms = [repr(secret), str(secret), f"{secret}", f"{secret:>40}", format(secret, "<9")]
    forms.append(repr([secret, {"k": secret}]))
    assert all(VALUE not in form for form in forms)
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "Secret('***')"


def test_reveal_returns_the_value() -> None:
    assert Secret(VALUE).reveal() == VALUE


def test_equality_and_hash_by_value() -> None:
    assert Secret(VALUE) == Secret(VALUE)
    assert Secret(VALUE) != Secret("other")
    assert Secret(VALUE) != VALUE  # a Secret is not its plain value
    assert hash(Secret(VALUE)) == hash(Secret(VALUE))
    assert len({Secret(VALUE), Secret(VALUE), Secret("other")}) == 2
    assert Secret("ünïcode") == Secret("ünïcode")


def test_only_strings_can_be_secrets() -> None:
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Secret(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "encode",
    [msgspec.json.encode, msgspec.msgpack.encode, msgspec.to_builtins, json.dumps, pickle.dumps],
)
def test_secrets_refuse_to_be_serialised(encode: object) -> None:
    for value in (Secret(VALUE), TokenIssued(token=Secret(VALUE), expires_at=1.0)):
        with pytest.raises(TypeError) as info:
            encode(value)  # type: ignore[operator]
        assert VALUE not in str(info.value)


def test_an_encoder_that_stringifies_unknown_types_gets_the_redacted_form() -> None:
    encoded = msgspec.json.encode(Secret(VALUE), enc_hook=str)
    assert encoded == b"\"Secret('***')\""


def test_copies_share_the_immutable_secret() -> None:
    secret = Secret(VALUE)
    assert copy.copy(secret) is secret
    assert copy.deepcopy({"s": secret})["s"] is secret


def test_messages_holding_a_secret_print_redacted() -> None:
    issued = TokenIssued(token=Secret(VALUE), expires_at=1.0)
    assert VALUE not in repr(issued)
    assert "Secret('***')" in repr(issued)


def test_logging_a_secret_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("pxnode.test").debug("token %s / %r", Secret(VALUE), Secret(VALUE))
    assert VALUE not in caplog.text
    assert REDACTED in caplog.text


# -------------------------------------------------------------------- redact


def test_redact_replaces_every_occurrence() -> None:
    text = f"bad key {VALUE} and again {VALUE}!"
    assert redact(text, Secret(VALUE)) == "bad key *** and again ***!"


def test_redact_takes_plain_strings_and_several_secrets() -> None:
    assert redact("a=KEY b=TOKEN", "KEY", Secret("TOKEN")) == "a=*** b=***"


def test_redact_removes_the_longer_secret_whole() -> None:
    assert redact("xx ABCDEF yy", "ABC", "ABCDEF") == "xx *** yy"


def test_redact_ignores_empty_secrets() -> None:
    assert redact("text", "", Secret("")) == "text"


# ---------------------------------------------------------------- jwt_expiry


def test_expiry_is_the_exp_claim() -> None:
    assert jwt_expiry(jwt(b'{"sub":"u","exp":1750000000}')) == 1_750_000_000.0
    assert jwt_expiry(jwt(b'{"exp":1750000000.5,"extra":[1,2]}')) == 1_750_000_000.5


def test_payload_padding_lengths_all_decode() -> None:
    for pad in ("", "x", "xx", "xxx"):
        token = jwt(b'{"exp":42,"p":"%s"}' % pad.encode())
        assert jwt_expiry(token) == 42.0


def test_a_token_without_exp_has_no_expiry() -> None:
    """The gateway documents 24 h tokens, not an ``exp`` claim: auth assumes 24 h."""
    assert jwt_expiry(jwt(b'{"sub":"u"}')) is None
    assert jwt_expiry(jwt(b'{"exp":null,"sub":"u"}')) is None


SECRET_PAYLOAD = b"TOPSECRETPAYLOAD"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "no-dots-TOPSECRETPAYLOAD",
        "a.TOPSECRETPAYLOAD",
        "a.b.c.TOPSECRETPAYLOAD",
        "a.!!TOPSECRETPAYLOAD!!.c",
        "a.TOPSECRETPAYLOAD.c",  # base64 of garbage, not JSON
        "a.TOPSECRETPAYLOADé.c",  # non-ASCII
        jwt(b"[1,2,3] TOPSECRETPAYLOAD"),
        jwt(b'{"exp":"1750000000","sub":"TOPSECRETPAYLOAD"}'),  # exp as string
        jwt(b'{"exp":true,"sub":"TOPSECRETPAYLOAD"}'),
        jwt(b'{"exp":-5,"sub":"TOPSECRETPAYLOAD"}'),
        jwt(b'{"exp":0,"sub":"TOPSECRETPAYLOAD"}'),
        jwt(b'{"exp":1e999,"sub":"TOPSECRETPAYLOAD"}'),
        jwt(b'{"exp":NaN,"sub":"TOPSECRETPAYLOAD"}'),
    ],
)
def test_malformed_tokens_raise_auth_failed_without_the_token(token: str) -> None:
    with pytest.raises(AuthFailed) as info:
        jwt_expiry(token)
    exc = info.value
    assert isinstance(exc, PxError)
    assert str(exc).startswith("malformed JWT")
    for text in (str(exc), repr(exc)):
        assert "TOPSECRETPAYLOAD" not in text
        if token:
            assert token not in text
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
