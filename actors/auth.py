"""The auth actor: owns the gateway JWT, keeps it fresh, hands it out.

Theory of operation
-------------------
Two tasks of one actor share its state on one thread. The *inbox loop*
answers messages and never waits on HTTP; the *keeper* makes every HTTP call,
one at a time, and sleeps until the next refresh is due. State changes only
in synchronous code between awaits, so neither task ever sees half a change
and no lock is needed. The actor is always in one of two states:

========  ==================================  ========================================  ========
state     event                               action                                    next
========  ==================================  ========================================  ========
FETCHING  GetToken                            reply if the held token is unexpired and  FETCHING
                                              not refused, else queue the asker
FETCHING  RefreshToken                        ignore: a fresh token is already coming   FETCHING
FETCHING  token obtained                      answer the queue, publish TokenIssued     HOLDING
FETCHING  no token (AuthFailed/GatewayError)  answer the queue and publish              (raise)
                                              AuthFailureReported, then raise
HOLDING   GetToken                            reply with the held token                 HOLDING
HOLDING   GetToken, token expired             queue the asker, wake the keeper (login)  FETCHING
HOLDING   RefreshToken                        mark the held token refused, wake the     FETCHING
                                              keeper (login)
HOLDING   refresh due                         validate; on failure login once           FETCHING
========  ==================================  ========================================  ========

Invariants: at most one HTTP call is in flight (only the keeper calls), so any
number of concurrent asks cost one login; every queued asker gets exactly one
answer unless the actor is stopped first; no fetch starts sooner than
``min_refresh_interval`` after the last token arrived (a wake is deferred and
timers floored until then), so neither a skewed clock nor a hub repeating 401
can drive a request storm, and a token revoked seconds after it was issued is
still replaced. A session the gateway logs out (``RefreshToken(logged_out=True)``)
again within ``logout_backoff_max`` of its login waits twice as long each time,
up to ``logout_backoff_max``: the gateway logs out a session when another one
with the same credentials is active (a trader's platform), and logging in at
once each time would push that one out in turn. Rejected credentials raise at
once and are never retried here: the supervisor decides.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import msgspec

from protocols import rest
from protocols.checks import non_negative, positive
from protocols.errors import AuthFailed, ConfigError, GatewayError, PxError
from protocols.gateway import (
    ENCODER,
    LoginKeyRequest,
    LoginResponse,
    RestResponse,
    ValidateResponse,
    decoder,
    describe_error,
)
from protocols.interfaces import ActorContext, Inbox, Ref
from protocols.messages import (
    AuthFailureReported,
    GetToken,
    RefreshToken,
    Request,
    Stop,
    TokenIssued,
)
from protocols.secrets import Secret, jwt_expiry, redact, redact_userinfo

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("pxnode.auth")

TOKENS_TOPIC = "topic.tokens"
UNDATED_LIFETIME = 86_400.0
"""Seconds a token without ``exp`` is taken to live (the gateway documents 24 h)."""
LOGIN_PATH = "/api/Auth/loginKey"
VALIDATE_PATH = "/api/Auth/validate"

R = TypeVar("R", bound=RestResponse)


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how to log in. ``api_key`` is a ``Secret``, so the config prints safely.

    Times are seconds. Retries cover 429 (waiting ``Retry-After``, capped at
    ``retry_after_max``), 5xx, timeouts and transport errors, with exponential
    backoff from ``backoff_min`` doubling to ``backoff_max``, shortened by up to
    ``backoff_jitter`` (a fraction), ``max_attempts`` calls in all.
    """

    username: str
    api_key: Secret
    api_url: str = "https://api.topstepx.com"
    refresh_before: float = 1800.0
    min_refresh_interval: float = 10.0
    logout_backoff_max: float = 600.0
    request_timeout: float = 10.0
    max_attempts: int = 5
    backoff_min: float = 1.0
    backoff_max: float = 60.0
    backoff_jitter: float = 0.1
    retry_after_max: float = 300.0

    def __post_init__(self) -> None:
        if not self.username:
            raise ConfigError("auth: username is empty")
        if not isinstance(self.api_key, Secret) or not self.api_key.reveal():
            raise ConfigError("auth: api_key must be a non-empty Secret")
        # Bytes an environment could not decode arrive as surrogates, which no request can
        # carry: said now (the values never), not as a login that never answers.
        if not _utf8(self.username):
            raise ConfigError("auth: the username is not valid UTF-8 text")
        if not _utf8(self.api_key.reveal()):
            raise ConfigError("auth: the API key is not valid UTF-8 text")
        if not self.api_url.startswith(("http://", "https://")):
            # Not shown: a value that is no URL may be a secret in the wrong setting.
            raise ConfigError("auth: api_url must be an http(s) URL (the value is not shown)")
        for name in (
            "refresh_before",
            "min_refresh_interval",
            "logout_backoff_max",
            "retry_after_max",
        ):
            non_negative(f"auth: {name}", getattr(self, name))
        for name in ("request_timeout", "backoff_min", "backoff_max"):
            positive(f"auth: {name}", getattr(self, name))
        if self.backoff_min > self.backoff_max:
            raise ConfigError("auth: backoff_min must not exceed backoff_max")
        if not 0 <= self.backoff_jitter < 1:
            raise ConfigError(f"auth: backoff_jitter must be in [0, 1), got {self.backoff_jitter}")
        if not 1 <= self.max_attempts <= 100:
            raise ConfigError(f"auth: max_attempts must be in 1..100, got {self.max_attempts}")

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        username: str | None = None,
        api_key: Secret | str | None = None,
        **settings: Any,
    ) -> AuthConfig:
        """Credentials given here win; missing ones come from PROJECT_X_USERNAME / _API_KEY."""
        env = os.environ if environ is None else environ
        username = username or env.get("PROJECT_X_USERNAME")
        key = api_key or env.get("PROJECT_X_API_KEY")
        if not username:
            raise ConfigError("auth: no username (set PROJECT_X_USERNAME)")
        if not key:
            raise ConfigError("auth: no API key (set PROJECT_X_API_KEY)")
        secret = key if isinstance(key, Secret) else Secret(key)
        return cls(username=username, api_key=secret, **settings)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class AuthActor:
    """Logs in, refreshes ahead of expiry, answers ``GetToken``, publishes ``TokenIssued``."""

    _wake: anyio.Event  # set to cut the keeper's sleep short; a new one per held token

    def __init__(
        self,
        config: AuthConfig,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        rng: random.Random | None = None,
        budget: rest.RestBudget | None = None,
    ) -> None:
        self._config = config
        self._transport = transport
        self._budget = budget
        self._rng = rng if rng is not None else random.Random(0)
        self._policy = msgspec.convert(config, rest.RetryPolicy, from_attributes=True)
        self._token: Secret | None = None
        self._expires_at = 0.0  # unix seconds (the JWT's exp)
        self._issued_at = -math.inf  # anyio time the held token arrived
        self._fetching = True  # a run starts by logging in
        self._refused = False  # a hub refused the held token: asks wait for the next
        self._logouts = 0  # logged out by the gateway in a row, each soon after its login
        self._hold_off = config.min_refresh_interval  # a forced login waits this since the last
        self._waiters: list[Ref[Any]] = []
        self._failure: PxError | None = None

    def __repr__(self) -> str:
        state = "fetching" if self._fetching else "holding"
        return f"<AuthActor {state} expires_at={self._expires_at:.0f} waiting={len(self._waiters)}>"

    async def run(self, inbox: Inbox[Any], ctx: ActorContext) -> None:
        import httpx

        tokens = ctx.ref(TOKENS_TOPIC)
        config = self._config
        self._wake = anyio.Event()
        async with (
            httpx.AsyncClient(
                base_url=config.api_url,
                transport=self._transport,
                timeout=config.request_timeout,
            ) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(self._keep, client, ctx, tokens, tg.cancel_scope)
            async for msg in inbox:
                if isinstance(msg, Stop):
                    break
                self._on_message(msg, ctx)
            tg.cancel_scope.cancel()
        if self._failure is not None:
            raise self._failure

    # ------------------------------------------------------------ inbox loop

    def _on_message(self, msg: Any, ctx: ActorContext) -> None:
        match msg:
            case Request(body=GetToken(), reply=reply):
                self._on_get_token(reply, ctx)
            case RefreshToken(logged_out=logged_out):
                self._on_refresh_token(logged_out is True)
            case _:
                logger.warning("ignoring unexpected message %s", type(msg).__name__)

    def _on_get_token(self, reply: Ref[Any], ctx: ActorContext) -> None:
        token = self._token
        if token is not None and not self._refused and ctx.wall_time() < self._expires_at:
            reply.try_tell(TokenIssued(token=token, expires_at=self._expires_at))
        elif token is not None and not self._fetching and not self._may_refetch():
            # Fresh from the gateway yet expired by our clock: the clocks disagree,
            # and this is still the newest token there is.
            reply.try_tell(TokenIssued(token=token, expires_at=self._expires_at))
        else:
            self._waiters.append(reply)
            if not self._fetching:
                logger.info("held token expired; logging in again")
                self._wake_keeper()

    def _on_refresh_token(self, logged_out: bool) -> None:
        if self._fetching:
            logger.debug("refresh requested while one is under way; coalesced")
            return
        # A token only seconds old may still be dead (revoked right after it was
        # issued): the refresh is deferred to ``min_refresh_interval``, never dropped.
        config = self._config
        self._hold_off = config.min_refresh_interval
        if logged_out:
            lived = anyio.current_time() - self._issued_at
            self._logouts = self._logouts + 1 if lived < config.logout_backoff_max else 1
            doubled = config.min_refresh_interval * 2.0 ** min(self._logouts - 1, 32)
            capped = min(doubled, config.logout_backoff_max)
            self._hold_off = max(capped, config.min_refresh_interval)
            if self._logouts > 1:
                logger.warning(
                    "the gateway logged the session out %d times in a row (is another session "
                    "using these credentials?); logging in again %.0f s after the last login",
                    self._logouts,
                    self._hold_off,
                )
        logger.info("refresh requested; logging in again")
        self._refused = True
        self._wake_keeper()

    def _may_refetch(self) -> bool:
        return anyio.current_time() - self._issued_at >= self._config.min_refresh_interval

    def _wake_keeper(self) -> None:
        self._fetching = True
        self._wake.set()

    # ---------------------------------------------------------------- keeper

    async def _keep(
        self,
        client: httpx.AsyncClient,
        ctx: ActorContext,
        tokens: Ref[Any],
        scope: anyio.CancelScope,
    ) -> None:
        try:
            fresh = await self._login(client)
            ctx.report_healthy()
            await self._hold(fresh, ctx, tokens)
            while True:
                forced = await self._sleep_until_due(ctx)
                self._fetching = True
                if forced:  # one login per min_refresh_interval, more after logouts in a row
                    await anyio.sleep_until(self._issued_at + self._hold_off)
                fresh = await (self._login(client) if forced else self._renew(client))
                await self._hold(fresh, ctx, tokens)
        except PxError as exc:
            self._failure = exc
            self._fetching = False
            report = AuthFailureReported(reason=str(exc))
            logger.error("no token: %s", exc)
            waiters, self._waiters = self._waiters, []
            for reply in waiters:
                reply.try_tell(report)
            tokens.try_tell(report)
            scope.cancel()

    async def _hold(
        self, fresh: tuple[Secret, float | None], ctx: ActorContext, tokens: Ref[Any]
    ) -> None:
        self._token, expires_at = fresh
        self._expires_at = ctx.wall_time() + UNDATED_LIFETIME if expires_at is None else expires_at
        self._issued_at = anyio.current_time()
        self._fetching = self._refused = False
        self._wake = anyio.Event()
        issued = TokenIssued(token=self._token, expires_at=self._expires_at)
        waiters, self._waiters = self._waiters, []
        for reply in waiters:
            reply.try_tell(issued)
        logger.info("token issued; expires in %.0f s", self._expires_at - ctx.wall_time())
        # A token must reach every subscriber: wait for room rather than drop it.
        await tokens.tell(issued)

    async def _sleep_until_due(self, ctx: ActorContext) -> bool:
        """Sleep until the refresh is due (False) or someone wakes us (True)."""
        lifetime = self._expires_at - ctx.wall_time()
        config = self._config
        # Refresh ``refresh_before`` ahead; a short-lived token at half its life;
        # never sooner than ``min_refresh_interval`` (a token born expired).
        delay = max(lifetime - config.refresh_before, lifetime / 2, config.min_refresh_interval)
        logger.debug("next refresh in %.0f s", delay)
        with anyio.move_on_after(delay):
            await self._wake.wait()
            return True
        return False

    async def _login(self, client: httpx.AsyncClient) -> tuple[Secret, float | None]:
        config = self._config
        body = ENCODER.encode(
            LoginKeyRequest(user_name=config.username, api_key=config.api_key.reveal())
        )
        answer = await self._call(client, LOGIN_PATH, body, LoginResponse)
        return _read_token(answer.token, LOGIN_PATH)

    async def _renew(self, client: httpx.AsyncClient) -> tuple[Secret, float | None]:
        try:
            answer = await self._call(
                client, VALIDATE_PATH, b"{}", ValidateResponse, bearer=self._token
            )
            return _read_token(answer.new_token, VALIDATE_PATH)
        except PxError as exc:
            logger.warning("token refresh failed (%s); logging in again", exc)
            return await self._login(client)

    # ----------------------------------------------------------------- HTTP

    async def _call(
        self,
        client: httpx.AsyncClient,
        path: str,
        body: bytes,
        kind: type[R],
        *,
        bearer: Secret | None = None,
    ) -> R:
        """One logical call: POST with retries, judged into an answer or a PxError."""
        policy = self._policy
        try:
            return await rest.with_retries(
                lambda: self._attempt(client, path, body, kind, bearer),
                policy,
                self._rng,
                log=logger,
            )
        except rest.Transient as exc:
            raise GatewayError(
                f"gave up after {policy.max_attempts} attempts: {exc}", status=exc.status
            ) from None

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        path: str,
        body: bytes,
        kind: type[R],
        bearer: Secret | None,
    ) -> R:
        response = await rest.post_json(
            client,
            path,
            body,
            self._policy,
            bearer=bearer,
            secrets=self._secrets(),
            budget=self._budget,
        )
        status = response.status_code
        url = redact_userinfo(str(response.request.url))  # the URL as requested
        if status in (401, 403):
            raise AuthFailed(f"POST {url} refused: HTTP {status}")
        if status != 200:
            raise GatewayError(f"POST {url} failed: HTTP {status}", status=status)
        try:
            answer = decoder(kind).decode(response.content)
        except msgspec.DecodeError:
            raise GatewayError(f"POST {path}: malformed answer", status=status) from None
        if not answer.success:
            raise AuthFailed(describe_error(path, answer, lambda t: redact(t, *self._secrets())))
        return answer

    def _secrets(self) -> tuple[Secret, ...]:
        held = (self._token,) if self._token is not None else ()
        return (self._config.api_key, *held)


def _read_token(raw: str | None, path: str) -> tuple[Secret, float | None]:
    if not raw:
        raise GatewayError(f"POST {path} succeeded without a token")
    return Secret(raw), jwt_expiry(raw)
