"""The auth actor against an in-memory gateway (httpx.MockTransport), in virtual time."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import math
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import trio
import trio.testing

from actors.auth import LOGIN_PATH, TOKENS_TOPIC, VALIDATE_PATH, AuthActor, AuthConfig
from protocols.errors import AuthFailed, ConfigError, GatewayError, MailboxClosed
from protocols.gateway import ENCODER, LoginResponse, ValidateResponse
from protocols.messages import (
    AuthFailureReported,
    GetToken,
    RefreshToken,
    Request,
    Stop,
    Tick,
    TokenIssued,
)
from protocols.secrets import Secret
from pxnode.testing import FakeContext, RecordingRef
from supervisors.mailbox import Mailbox
from supervisors.ref import MailboxRef

EPOCH = 1_750_000_000.0  # wall time at virtual time 0
DAY = 86_400.0
API_KEY = "APIKEY-3f9c2b7e1d-DO-NOT-LOG"


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HEADER = b64url(b'{"alg":"HS256","typ":"JWT"}')


def make_jwt(exp: float, n: int) -> str:
    claims = json.dumps({"sub": "demo", "jti": f"token-{n}-SECRET", "exp": exp}).encode()
    return f"{HEADER}.{b64url(claims)}.{b64url(b'sig')}"


def wall() -> float:
    return EPOCH + anyio.current_time()


# -------------------------------------------------------------------- doubles


class AuthContext(FakeContext):
    """The auth actor's context: its token topic recorded, a wall clock that can jump."""

    def __init__(self) -> None:
        self.tokens = RecordingRef(TOKENS_TOPIC)
        self.skew = 0.0  # added to wall time: a suspended laptop, a stepped clock
        super().__init__("auth", [self.tokens], wall=lambda: wall() + self.skew)

    @property
    def issued(self) -> list[TokenIssued]:
        return [m for m in self.tokens.told if isinstance(m, TokenIssued)]


@dataclass
class Call:
    path: str
    at: float
    headers: httpx.Headers
    body: Any


Step = Callable[[httpx.Request], Awaitable[httpx.Response]]


@dataclass
class Gateway:
    """Answers like the ProjectX gateway; ``script[path]`` overrides the next answers."""

    lifetime: float = DAY
    calls: list[Call] = field(default_factory=list)
    script: dict[str, list[httpx.Response | Step]] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def token(self) -> str:
        token = make_jwt(wall() + self.lifetime, len(self.tokens))
        self.tokens.append(token)
        return token

    def paths(self) -> list[str]:
        return [c.path for c in self.calls]

    def times(self, path: str = LOGIN_PATH) -> list[float]:
        return [c.at for c in self.calls if c.path == path]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(
            Call(path, anyio.current_time(), request.headers, json.loads(request.content))
        )
        steps = self.script.get(path)
        if steps:
            step = steps.pop(0)
            return step if isinstance(step, httpx.Response) else await step(request)
        if path == LOGIN_PATH:
            return ok(LoginResponse(token=self.token()))
        if path == VALIDATE_PATH:
            return ok(ValidateResponse(new_token=self.token()))
        return httpx.Response(404)


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, content=ENCODER.encode(body))


def config(**overrides: Any) -> AuthConfig:
    settings: dict[str, Any] = {
        "username": "demo",
        "api_key": Secret(API_KEY),
        "api_url": "https://gateway.test",
        "backoff_jitter": 0.0,
    }
    settings.update(overrides)
    return AuthConfig(**settings)


@dataclass
class Running:
    actor: AuthActor
    ctx: AuthContext
    mailbox: Mailbox[Any]
    ref: MailboxRef[Any]

    async def ask(self, timeout: float = 600.0) -> Any:
        return await self.ref.ask(GetToken(), timeout)


@contextmanager
def inbox() -> Iterator[Mailbox[Any]]:
    mailbox: Mailbox[Any] = Mailbox("auth")
    try:
        yield mailbox
    finally:
        mailbox.dispose()


@asynccontextmanager
async def running(gateway: Gateway, **overrides: Any) -> AsyncIterator[Running]:
    actor = AuthActor(config(**overrides), gateway.transport())
    ctx = AuthContext()
    with inbox() as mailbox:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor.run, mailbox, ctx)
            yield Running(actor, ctx, mailbox, MailboxRef(mailbox))
            mailbox.close()  # the actor drains, sees the end, and returns


@dataclass
class Failed:
    error: BaseException
    actor: AuthActor
    ctx: AuthContext
    waiters: list[RecordingRef]


async def run_to_failure(
    gateway: Gateway, expected: type[Exception], *, asks: int = 0, **overrides: Any
) -> Failed:
    """Run the actor with ``asks`` GetToken asks queued until it raises ``expected``."""
    actor = AuthActor(config(**overrides), gateway.transport())
    ctx = AuthContext()
    waiters = [RecordingRef("reply") for _ in range(asks)]
    with inbox() as mailbox:
        for waiter in waiters:
            mailbox.send_nowait(Request(body=GetToken(), reply=waiter))
        with pytest.raises(expected) as info:
            await actor.run(mailbox, ctx)
    return Failed(info.value, actor, ctx, waiters)


def later(response: httpx.Response, delay: float = 1.0) -> Step:
    async def step(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(delay)
        return response

    return step


def reply_of(answers: list[Any]) -> Any:
    assert len(answers) == 1
    return answers[0]


# ------------------------------------------------------------------- login


@pytest.mark.trio
async def test_login_publishes_the_token_and_reports_healthy(autojump_clock: Any) -> None:
    gateway = Gateway()
    async with running(gateway) as node:
        issued = await node.ask()
        assert isinstance(issued, TokenIssued)
        assert issued.token.reveal() == gateway.tokens[0]
        assert node.ctx.issued == [issued]
        assert node.ctx.healthy == 1
    [call] = gateway.calls
    assert call.path == "/api/Auth/loginKey"
    assert call.body == {"userName": "demo", "apiKey": API_KEY}
    assert call.headers["content-type"] == "application/json"
    assert "authorization" not in call.headers


@pytest.mark.trio
async def test_expiry_is_read_from_the_jwt_exp(autojump_clock: Any) -> None:
    gateway = Gateway(lifetime=12_345.5)
    async with running(gateway) as node:
        issued = await node.ask()
    assert issued.expires_at == EPOCH + 12_345.5


@pytest.mark.trio
async def test_refresh_happens_exactly_refresh_before_ahead(autojump_clock: Any) -> None:
    gateway = Gateway(lifetime=DAY)
    async with running(gateway) as node:
        await trio.sleep(3 * DAY)
        published = node.ctx.issued
    assert gateway.times(LOGIN_PATH) == [0.0]
    assert gateway.times(VALIDATE_PATH) == [84_600.0, 169_200.0, 253_800.0]
    # each validate presents the token it renews
    validates = [c for c in gateway.calls if c.path == VALIDATE_PATH]
    assert [c.headers["authorization"] for c in validates] == [
        f"Bearer {t}" for t in gateway.tokens[:3]
    ]
    assert all(c.body == {} for c in validates)
    assert [p.token.reveal() for p in published] == gateway.tokens
    assert [p.expires_at for p in published] == [
        EPOCH + t + DAY for t in (0, 84_600, 169_200, 253_800)
    ]


@pytest.mark.trio
async def test_refresh_before_is_configurable(autojump_clock: Any) -> None:
    gateway = Gateway(lifetime=DAY)
    async with running(gateway, refresh_before=60.0):
        await trio.sleep(DAY)
    assert gateway.times(VALIDATE_PATH) == [DAY - 60.0]


@pytest.mark.trio
async def test_a_short_lived_token_is_refreshed_at_half_life(autojump_clock: Any) -> None:
    gateway = Gateway(lifetime=600.0)
    async with running(gateway):
        await trio.sleep(700.0)
    assert gateway.times(VALIDATE_PATH) == [300.0, 600.0]


@pytest.mark.trio
async def test_a_token_born_expired_is_not_refreshed_in_a_hot_loop(autojump_clock: Any) -> None:
    gateway = Gateway(lifetime=-30.0)  # the gateway's clock is behind ours
    async with running(gateway) as node:
        answers = [await node.ask() for _ in range(20)]
        await trio.sleep(35.0)
    # min_refresh_interval (10 s) bounds the rate whatever the clocks say
    assert gateway.times(LOGIN_PATH) == [0.0]
    assert gateway.times(VALIDATE_PATH) == [10.0, 20.0, 30.0]
    assert all(a.token.reveal() == gateway.tokens[0] for a in answers)


# ------------------------------------------------------------- coalescing


async def slow_login(request: httpx.Request) -> httpx.Response:
    await anyio.sleep(5.0)
    return ok(LoginResponse(token=make_jwt(wall() + DAY, 99)))


@pytest.mark.trio
async def test_concurrent_asks_during_login_cost_one_http_call(autojump_clock: Any) -> None:
    gateway = Gateway(script={LOGIN_PATH: [slow_login]})
    answers: list[Any] = []
    async with running(gateway) as node:

        async def ask() -> None:
            answers.append(await node.ask())

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(ask)
        assert trio.current_time() == 5.0
    assert len(gateway.calls) == 1
    assert len(answers) == 10
    assert len({a.token for a in answers}) == 1


@pytest.mark.trio
async def test_asks_during_a_refresh_get_the_held_token_at_once(autojump_clock: Any) -> None:
    async def slow_validate(request: httpx.Request) -> httpx.Response:
        await trio.sleep(5.0)
        return ok(ValidateResponse(new_token=gateway.token()))

    gateway = Gateway(script={VALIDATE_PATH: [slow_validate]})
    async with running(gateway) as node:
        await trio.sleep(84_600.0 + 1.0)  # the validate is under way
        issued = await node.ask()
        assert trio.current_time() == 84_601.0
        assert issued.token.reveal() == gateway.tokens[0]
        await trio.sleep(60.0)
        assert (await node.ask()).token.reveal() == gateway.tokens[1]
    assert gateway.paths() == [LOGIN_PATH, VALIDATE_PATH]


@pytest.mark.trio
async def test_asks_with_an_expired_token_queue_for_one_new_login(autojump_clock: Any) -> None:
    gateway = Gateway(
        script={LOGIN_PATH: [ok(LoginResponse(token=make_jwt(EPOCH + DAY, 0))), slow_login]}
    )
    answers: list[Any] = []
    async with running(gateway) as node:
        await trio.sleep(20.0)
        node.ctx.skew = 2 * DAY  # wall time jumped past exp (e.g. the machine slept)

        async def ask() -> None:
            answers.append(await node.ask())

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(ask)
    assert gateway.times(LOGIN_PATH) == [0.0, 20.0]
    assert [a.token.reveal() for a in answers] == [make_jwt(EPOCH + 25.0 + DAY, 99)] * 5


@pytest.mark.trio
async def test_refresh_token_forces_one_login(autojump_clock: Any) -> None:
    gateway = Gateway()
    async with running(gateway) as node:
        await trio.sleep(60.0)
        node.ref.tell_nowait(RefreshToken())
        node.ref.tell_nowait(RefreshToken())  # a second hub reporting the same 401
        await trio.sleep(1.0)
        assert (await node.ask()).token.reveal() == gateway.tokens[1]
        # The new token is 1 s old and refused already (revoked right after it was
        # issued): the login waits out min_refresh_interval, it is not dropped.
        node.ref.tell_nowait(RefreshToken())
        assert (await node.ask()).token.reveal() == gateway.tokens[2]
        assert trio.current_time() == 70.0
        assert [t.token.reveal() for t in node.ctx.issued] == gateway.tokens
    assert gateway.times(LOGIN_PATH) == [0.0, 60.0, 70.0]


@pytest.mark.trio
async def test_logged_out_again_and_again_the_node_logs_in_less_and_less_often(
    autojump_clock: Any,
) -> None:
    """The gateway logs a session out when another with the same credentials is active (a
    trader's platform): logging in at once each time would push that one out in turn."""
    gateway = Gateway()
    async with running(gateway, logout_backoff_max=60.0) as node:
        await trio.sleep(60.0)
        for _ in range(5):  # each new session logged out a second after its login
            node.ref.tell_nowait(RefreshToken(logged_out=True))
            await node.ask()
            await trio.sleep(1.0)
        await trio.sleep(600.0)  # a session that lasts: the next logout starts over
        node.ref.tell_nowait(RefreshToken(logged_out=True))
        await node.ask()
        node.ref.tell_nowait(RefreshToken())  # a 401 is not a logout: min_refresh_interval
        await node.ask()
    logins = gateway.times(LOGIN_PATH)
    # after its login: 10 s, 20 s, 40 s, then at most logout_backoff_max
    assert logins[:6] == [0.0, 60.0, 80.0, 120.0, 180.0, 240.0]
    assert logins[6:] == [841.0, 851.0]


@pytest.mark.trio
async def test_asks_after_a_refused_token_wait_for_the_new_one(autojump_clock: Any) -> None:
    gateway = Gateway(
        script={LOGIN_PATH: [ok(LoginResponse(token=make_jwt(EPOCH + DAY, 0))), slow_login]}
    )
    async with running(gateway) as node:
        await trio.sleep(60.0)
        node.ref.tell_nowait(RefreshToken())  # a hub answered 401 to token 0
        issued = await node.ask()
        assert trio.current_time() == 65.0
    assert issued.token.reveal() == make_jwt(EPOCH + 65.0 + DAY, 99)


@pytest.mark.trio
async def test_refresh_token_during_a_login_is_coalesced(autojump_clock: Any) -> None:
    gateway = Gateway(script={LOGIN_PATH: [slow_login]})
    async with running(gateway) as node:
        await trio.sleep(1.0)
        node.ref.tell_nowait(RefreshToken())
        await trio.sleep(10.0)
    assert len(gateway.calls) == 1


# ---------------------------------------------------------------- retries


@pytest.mark.trio
async def test_429_waits_retry_after(autojump_clock: Any) -> None:
    gateway = Gateway(script={LOGIN_PATH: [httpx.Response(429, headers={"Retry-After": "7"})]})
    async with running(gateway) as node:
        issued = await node.ask()
    assert gateway.times() == [0.0, 7.0]
    assert issued.token.reveal() == gateway.tokens[0]


@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [
        ("1e9", 300.0),  # capped at retry_after_max
        ("-3", 1.0),  # unusable: backoff instead
        ("nan", 1.0),
        ("inf", 1.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1.0),
        ("0", 0.0),
    ],
)
@pytest.mark.trio
async def test_unusable_or_huge_retry_after(
    autojump_clock: Any, retry_after: str, delay: float
) -> None:
    gateway = Gateway(
        script={LOGIN_PATH: [httpx.Response(429, headers={"Retry-After": retry_after})]}
    )
    async with running(gateway) as node:
        await node.ask()
    assert gateway.times() == [0.0, delay]


@pytest.mark.trio
async def test_5xx_backs_off_exponentially_then_succeeds(autojump_clock: Any) -> None:
    gateway = Gateway(script={LOGIN_PATH: [httpx.Response(s) for s in (500, 502, 503)]})
    async with running(gateway) as node:
        issued = await node.ask()
    assert gateway.times() == [0.0, 1.0, 3.0, 7.0]
    assert issued.token.reveal() == gateway.tokens[0]
    assert node.ctx.healthy == 1


@pytest.mark.trio
async def test_transport_errors_and_timeouts_are_retried(autojump_clock: Any) -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def hang(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    gateway = Gateway(script={LOGIN_PATH: [refuse, hang]})
    async with running(gateway) as node:
        await node.ask()
    # 0: refused, wait 1; 1: hangs until the 10 s timeout, wait 2; 13: ok
    assert gateway.times() == [0.0, 1.0, 13.0]


@pytest.mark.trio
async def test_backoff_is_capped_and_jittered_deterministically(autojump_clock: Any) -> None:
    script: dict[str, list[httpx.Response | Step]] = {
        LOGIN_PATH: [httpx.Response(503) for _ in range(7)]
    }
    gateway = Gateway(script=script)
    async with running(gateway, max_attempts=8, backoff_max=10.0, backoff_jitter=0.5) as node:
        await node.ask()
    times = gateway.times()
    waits = [b - a for a, b in itertools.pairwise(times)]
    bases = [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert all(base / 2 <= w <= base for w, base in zip(waits, bases, strict=True))
    assert len(set(waits)) > 1
    again = Gateway(script={LOGIN_PATH: [httpx.Response(503) for _ in range(7)]})
    async with running(again, max_attempts=8, backoff_max=10.0, backoff_jitter=0.5) as node:
        await node.ask()
    again_waits = [b - a for a, b in itertools.pairwise(again.times())]
    assert again_waits == pytest.approx(waits)  # the same seeded RNG, the same schedule


@pytest.mark.trio
async def test_gives_up_after_max_attempts(autojump_clock: Any) -> None:
    gateway = Gateway(script={LOGIN_PATH: [httpx.Response(503) for _ in range(10)]})
    failed = await run_to_failure(gateway, GatewayError, asks=1, max_attempts=3)
    assert isinstance(failed.error, GatewayError)
    assert "after 3 attempts" in str(failed.error)
    assert failed.error.status == 503
    assert gateway.times() == [0.0, 1.0, 3.0]
    assert failed.ctx.healthy == 0
    assert isinstance(reply_of(failed.waiters[0].told), AuthFailureReported)
    assert isinstance(reply_of(failed.ctx.tokens.told), AuthFailureReported)


# -------------------------------------------------------- rejected credentials


@pytest.mark.parametrize(
    "answer",
    [
        ok(LoginResponse(success=False, error_code=3, error_message="Invalid credentials")),
        ok(LoginResponse(token=None, success=False, error_code=9)),
        httpx.Response(401),
        httpx.Response(403),
    ],
)
@pytest.mark.trio
async def test_rejected_credentials_raise_auth_failed_without_retrying(
    autojump_clock: Any, answer: httpx.Response
) -> None:
    gateway = Gateway(script={LOGIN_PATH: [later(answer)] * 10})
    failed = await run_to_failure(gateway, AuthFailed, asks=3)
    assert len(gateway.calls) == 1
    assert trio.current_time() == 1.0
    for waiter in failed.waiters:  # asks taken in while logging in are answered
        assert isinstance(reply_of(waiter.told), AuthFailureReported)
    assert failed.ctx.issued == []
    assert failed.ctx.healthy == 0


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, content=b"<html>maintenance</html>"),
        httpx.Response(200, content=b'{"token":42,"success":true}'),
        httpx.Response(200, content=b'{"success":true,"errorCode":0}'),  # no token
        httpx.Response(200, content=b'{"token":"","success":true}'),
        httpx.Response(200, content=b"[]"),
        httpx.Response(404),
        httpx.Response(400, content=b'{"title":"bad request"}'),
        httpx.Response(204),
        httpx.Response(200, stream=httpx.ByteStream(b"x"), headers={"content-encoding": "gzip"}),
    ],
)
@pytest.mark.trio
async def test_malformed_answers_raise_gateway_error_without_retrying(
    autojump_clock: Any, answer: httpx.Response
) -> None:
    gateway = Gateway(script={LOGIN_PATH: [answer] * 10})
    await run_to_failure(gateway, GatewayError)
    assert len(gateway.calls) == 1


@pytest.mark.parametrize("token", ["not-a-jwt-SECRETISH", "a.SECRETISH.c", make_jwt(-1.0, 0)])
@pytest.mark.trio
async def test_a_malformed_jwt_is_auth_failed_without_the_token(
    autojump_clock: Any, token: str
) -> None:
    gateway = Gateway(script={LOGIN_PATH: [ok(LoginResponse(token=token))]})
    failed = await run_to_failure(gateway, AuthFailed)
    for part in (token, *token.split(".")):
        assert len(part) < 4 or part not in str(failed.error)
    assert "malformed JWT" in str(failed.error)


# ------------------------------------------------------------ refresh fails


@pytest.mark.parametrize(
    "failure",
    [
        [ok(ValidateResponse(success=False, error_code=2))],
        [httpx.Response(401)],
        [ok(ValidateResponse(new_token=None))],
        [ok(ValidateResponse(new_token="garbage"))],
        [httpx.Response(503)] * 5,
    ],
)
@pytest.mark.trio
async def test_a_failed_validate_falls_back_to_one_login(
    autojump_clock: Any, failure: list[httpx.Response | Step]
) -> None:
    gateway = Gateway(script={VALIDATE_PATH: list(failure)})
    async with running(gateway) as node:
        await trio.sleep(84_600.0 + 100.0)
        issued = await node.ask()
    assert gateway.paths() == [LOGIN_PATH] + [VALIDATE_PATH] * len(failure) + [LOGIN_PATH]
    assert issued.token.reveal() == gateway.tokens[-1]
    assert [t.token.reveal() for t in node.ctx.issued] == gateway.tokens


@pytest.mark.trio
async def test_validate_failing_and_then_rejected_login_raises(autojump_clock: Any) -> None:
    rejected = ok(LoginResponse(success=False, error_code=3))
    gateway = Gateway(
        script={
            VALIDATE_PATH: [httpx.Response(401)],
            LOGIN_PATH: [ok(LoginResponse(token=make_jwt(EPOCH + DAY, 0))), rejected],
        }
    )
    failed = await run_to_failure(gateway, AuthFailed)
    assert str(failed.error) == "Auth/loginKey refused: errorCode 3 (InvalidCredentials)"
    assert gateway.paths() == [LOGIN_PATH, VALIDATE_PATH, LOGIN_PATH]
    assert trio.current_time() == 84_600.0


# ------------------------------------------------------------ inbox and exit


@pytest.mark.trio
async def test_stop_ends_the_run_and_the_keeper(autojump_clock: Any) -> None:
    gateway = Gateway()
    actor = AuthActor(config(), gateway.transport())
    with inbox() as mailbox:
        mailbox.send_nowait(Stop())
        await actor.run(mailbox, AuthContext())  # returns: no refresh timer left behind
    assert trio.current_time() == 0.0


@pytest.mark.trio
async def test_unexpected_messages_are_ignored(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = Gateway()
    async with running(gateway) as node:
        for junk in (
            Tick(now=1.0),
            GetToken(),
            Request(body="token?", reply=RecordingRef("r")),
            None,
        ):
            node.ref.tell_nowait(junk)
        assert isinstance(await node.ask(), TokenIssued)
    assert caplog.text.count("ignoring unexpected message") == 4


def GoneRef(error: Exception) -> RecordingRef:
    """A reply ref whose asker has gone: every tell raises ``error``."""
    gone = RecordingRef("gone")
    gone.fail = error
    return gone


@pytest.mark.parametrize(
    "error", [anyio.BrokenResourceError(), anyio.WouldBlock(), MailboxClosed("gone")]
)
@pytest.mark.trio
async def test_an_asker_that_went_away_does_not_crash_the_actor(
    autojump_clock: Any, error: Exception
) -> None:
    gateway = Gateway(script={LOGIN_PATH: [slow_login]})
    async with running(gateway) as node:
        node.ref.tell_nowait(Request(body=GetToken(), reply=GoneRef(error)))
        await trio.sleep(10.0)
        node.ref.tell_nowait(Request(body=GetToken(), reply=GoneRef(error)))
        assert isinstance(await node.ask(), TokenIssued)


# ------------------------------------------------------------------ secrets


@pytest.mark.trio
async def test_the_token_and_key_never_leak(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Run through retries, a failed refresh and a rejection; scan everything printable."""
    caplog.set_level(logging.DEBUG)
    first = make_jwt(EPOCH + DAY, 0)
    echo = f"bad key {API_KEY} / bad token {first}"
    gateway = Gateway(
        script={
            LOGIN_PATH: [
                httpx.Response(429, headers={"Retry-After": "2"}),
                httpx.Response(500),
                ok(LoginResponse(token=first)),
                ok(LoginResponse(success=False, error_code=3, error_message=echo)),
            ],
            VALIDATE_PATH: [ok(ValidateResponse(success=False, error_code=1, error_message=echo))],
        }
    )
    failed = await run_to_failure(gateway, AuthFailed, asks=1)
    exc = failed.error
    printable = [
        caplog.text,
        repr(failed.actor),
        repr(config()),
        str(config()),
        str(exc),
        repr(exc),
        "".join(traceback.format_exception(exc)),
        *map(repr, failed.waiters[0].told),
        *map(repr, failed.ctx.tokens.told),
    ]
    assert "errorCode 3" in str(exc)
    assert "***" in str(exc)  # the echoed secrets were redacted, the rest kept
    assert any("retrying in" in r.getMessage() for r in caplog.records)
    for text in printable:
        assert API_KEY not in text
        assert first not in text
        assert first.split(".")[1] not in text
    # ...and yet the key did go on the wire where it belongs
    assert gateway.calls[0].body["apiKey"] == API_KEY


def test_runs_on_asyncio() -> None:
    """The same actor on anyio's asyncio backend (real time, no sleeps)."""

    async def scenario() -> None:
        gateway = Gateway(script={LOGIN_PATH: [httpx.Response(503)]})
        actor = AuthActor(config(backoff_min=0.001), gateway.transport())
        ctx = AuthContext()
        with inbox() as mailbox:
            async with anyio.create_task_group() as tg:
                tg.start_soon(actor.run, mailbox, ctx)
                issued = await MailboxRef(mailbox).ask(GetToken(), 5.0)
                MailboxRef(mailbox).tell_nowait(RefreshToken())  # too young: ignored
                mailbox.close()
        assert issued.token.reveal() == gateway.tokens[0]
        assert gateway.paths() == [LOGIN_PATH, LOGIN_PATH]
        assert ctx.healthy == 1

    anyio.run(scenario, backend="asyncio")


# ------------------------------------------------------------------- config


def test_config_from_env() -> None:
    env = {"PROJECT_X_USERNAME": "trader", "PROJECT_X_API_KEY": API_KEY}
    cfg = AuthConfig.from_env(env, refresh_before=60.0)
    assert cfg.username == "trader"
    assert cfg.api_key == Secret(API_KEY)
    assert cfg.refresh_before == 60.0
    assert cfg.api_url == "https://api.topstepx.com"
    assert API_KEY not in repr(cfg)


def test_given_credentials_win_over_env() -> None:
    env = {"PROJECT_X_USERNAME": "env-user", "PROJECT_X_API_KEY": "env-key"}
    cfg = AuthConfig.from_env(env, username="given", api_key=Secret("given-key"))
    assert (cfg.username, cfg.api_key.reveal()) == ("given", "given-key")
    assert AuthConfig.from_env(env, api_key="plain").api_key == Secret("plain")


def test_config_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROJECT_X_USERNAME", "proc-user")
    monkeypatch.setenv("PROJECT_X_API_KEY", API_KEY)
    assert AuthConfig.from_env().username == "proc-user"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"PROJECT_X_USERNAME": "u"},
        {"PROJECT_X_API_KEY": API_KEY},
        {"PROJECT_X_USERNAME": "", "PROJECT_X_API_KEY": API_KEY},
    ],
)
def test_missing_credentials_are_a_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        AuthConfig.from_env(env)
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"username": ""},
        {"api_key": Secret("")},
        {"api_key": API_KEY},  # a plain str is not a Secret
        {"api_url": "ftp://gateway"},
        {"refresh_before": -1.0},
        {"refresh_before": math.nan},
        {"min_refresh_interval": math.inf},
        {"request_timeout": 0.0},
        {"request_timeout": math.nan},
        {"backoff_min": -1.0},
        {"backoff_max": math.inf},
        {"backoff_min": 10.0, "backoff_max": 1.0},
        {"backoff_jitter": 1.0},
        {"backoff_jitter": -0.1},
        {"max_attempts": 0},
        {"max_attempts": 10**9},
        {"retry_after_max": -5.0},
    ],
)
def test_invalid_config_is_a_config_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        config(**bad)
    assert API_KEY not in str(info.value)


@pytest.mark.trio
async def test_a_token_without_exp_is_taken_to_live_24_hours(autojump_clock: Any) -> None:
    claims = b64url(b'{"sub":"demo"}')
    undated = f"{HEADER}.{claims}.{b64url(b'sig')}"
    gateway = Gateway(script={LOGIN_PATH: [ok(LoginResponse(token=undated))]})
    async with running(gateway) as node:
        issued = await node.ask()
        assert issued.expires_at == EPOCH + DAY
        await trio.sleep(DAY - 1800 + 1)  # refreshed refresh_before ahead, as any token
    assert gateway.times(VALIDATE_PATH) == [DAY - 1800]
