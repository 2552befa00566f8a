"""Calling the ProjectX REST API: one POST attempt, the retries around it, the shared budget.

The node has several REST clients (auth, history, ...) and they must fail alike.
An attempt that may succeed if repeated (HTTP 429, 5xx, a timeout, a transport
error) raises ``Transient``; every other answer goes back to the caller, who
alone knows what a 401 or a ``success: false`` means for its endpoint. Retries
wait ``Retry-After`` when the gateway sends a usable one (capped, so a hostile
header cannot park the node for a day), else back off exponentially with
jitter drawn from the caller's seeded ``random.Random``, so a test replays the
same waits.

The gateway limits every user to 30 History/retrieveBars requests per 30 s and
200 other requests per 60 s, and answers more with HTTP 429 (no rate-limit
headers). ``RestBudget`` is the node's own copy of those limits, one object per
node handed to every REST caller: each request first *reserves* a slot, the
earliest instant at which the sliding window has room, then sleeps until it.
A reservation is a synchronous computation on one thread, so callers in
different actors queue in order without a lock, and a request is delayed by
the budget, never failed. A 429 (someone else spends the same budget, or the
limits changed) holds the whole window for ``Retry-After`` or, without it, one
period. HTTP 429 is retried until it succeeds (or the caller is cancelled);
only other transient failures count towards ``max_attempts``.

``TokenCaller`` is what every REST caller with a token shares (history,
account): it asks auth for the token, sends one POST through ``post_json``
with retries, asks for one fresh token after a 401, and ends every failure as
``Failed(kind, what)`` with ``kind`` one of ``FAILURES``, so two actors fail
alike and count alike.

Invariant: no text raised or logged here holds a secret; whatever may echo one
(an httpx error can quote a header) passes ``redact`` with the caller's secrets.

httpx is imported where a client is made or its errors caught, here and in every
REST caller, never at module level: a node fed from a tape (``pxnode replay``)
makes no request, and httpx 0.29 loads rich, pygments and click with it (9 MiB
of the replay's 100 MiB budget, 0.2 s of its start-up).
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import msgspec
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from protocols import gateway as gw
from protocols.checks import count, positive
from protocols.errors import GatewayError, PxError
from protocols.interfaces import Ref
from protocols.messages import GetToken, RefreshToken, TokenIssued
from protocols.secrets import Secret, redact

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")
R = TypeVar("R", bound=gw.RestResponse)


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How long one attempt may take and how hard to try; the owning config validates it.

    Seconds throughout: backoff starts at ``backoff_min``, doubles up to
    ``backoff_max`` and is shortened by up to ``backoff_jitter`` (a fraction);
    ``Retry-After`` is capped at ``retry_after_max``; ``max_attempts`` calls in all.
    """

    request_timeout: float
    max_attempts: int
    backoff_min: float
    backoff_max: float
    backoff_jitter: float
    retry_after_max: float


HISTORY_PREFIX: Final = "/api/History/"


class RateLimit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """At most ``requests`` requests in any ``period`` seconds."""

    requests: int
    period: float

    def __post_init__(self) -> None:
        count("rate limit requests", self.requests)
        positive("rate limit period", self.period)


class RestLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The gateway's REST limits: History/retrieveBars, and every other endpoint."""

    history: RateLimit = RateLimit(30, 30.0)
    other: RateLimit = RateLimit(200, 60.0)


class _Window:
    """A sliding window of reserved send times (anyio clock), at most ``limit.requests`` long."""

    __slots__ = ("held_until", "limit", "times")

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.times: deque[float] = deque(maxlen=limit.requests)
        self.held_until = -math.inf

    def reserve(self, now: float) -> float:
        at = max(now, self.held_until)
        if len(self.times) == self.limit.requests:
            at = max(at, self.times[0] + self.limit.period)
        self.times.append(at)  # maxlen drops the oldest: it no longer limits anything
        return at


class RestBudget:
    """One node's REST budget, shared by all its REST callers (see the module docstring)."""

    def __init__(self, limits: RestLimits | None = None) -> None:
        limits = limits if limits is not None else RestLimits()
        self._history = _Window(limits.history)
        self._other = _Window(limits.other)
        self.waited = 0.0  # seconds requests spent queued, in all

    def __repr__(self) -> str:
        return f"<RestBudget history={len(self._history.times)} other={len(self._other.times)}>"

    def _window(self, path: str) -> _Window:
        return self._history if path.startswith(HISTORY_PREFIX) else self._other

    async def acquire(self, path: str) -> None:
        """Wait for a slot for one request to ``path`` (the reservation is made at once)."""
        now = anyio.current_time()
        at = self._window(path).reserve(now)
        if at > now:
            self.waited += at - now
            await anyio.sleep(at - now)

    def hold(self, path: str, seconds: float | None) -> None:
        """The gateway said 429: no request of ``path``'s kind before ``seconds`` from now."""
        window = self._window(path)
        wait = window.limit.period if seconds is None else seconds
        window.held_until = max(window.held_until, anyio.current_time() + wait)


class Transient(Exception):
    """A failed attempt worth repeating (429, 5xx, timeout, transport error)."""

    def __init__(
        self, what: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(what)
        self.status = status
        self.retry_after = retry_after


def retry_after(response: httpx.Response, cap: float) -> float | None:
    """``Retry-After`` in seconds, capped; None (use backoff) if absent or unusable."""
    try:
        seconds = float(response.headers.get("retry-after", "nan"))
    except ValueError:  # an HTTP-date or garbage
        return None
    if not (math.isfinite(seconds) and seconds >= 0):
        return None
    return min(seconds, cap)


def jittered_backoff(
    attempt: int, low: float, high: float, jitter: float, rng: random.Random
) -> float:
    """Seconds before try ``attempt + 1``: ``low`` doubling per attempt up to ``high``,
    shortened by up to ``jitter`` (a fraction) so that many callers do not retry in step."""
    base = min(low * 2.0 ** min(attempt - 1, 64), high)
    return base * (1 - jitter * rng.random())


def backoff(policy: RetryPolicy, rng: random.Random) -> Callable[[RetryCallState], float]:
    """A tenacity ``wait``: the gateway's ``Retry-After`` if it gave one, else jittered backoff."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            return exc.retry_after
        return jittered_backoff(
            state.attempt_number, policy.backoff_min, policy.backoff_max, policy.backoff_jitter, rng
        )

    return wait


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    rng: random.Random,
    *,
    log: logging.Logger,
    label: str = "attempt",
) -> T:
    """Await ``attempt()`` until it returns or raises anything but ``Transient``.

    HTTP 429 is retried without limit and does not count: after ``max_attempts``
    other failures the last ``Transient`` propagates (a burst of 429s between two
    5xx does not use up the 5xx's attempts); giving up means something different to
    each caller. Every retry is logged as a warning on ``log``: "<label> N of M
    failed" (N counts the failures that count) or "<label> rate-limited".
    """
    failures = 0

    def stop(state: RetryCallState) -> bool:
        nonlocal failures
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Transient) and exc.status == 429:
            return False  # the budget was exceeded: waiting it out always ends
        failures += 1
        return failures >= policy.max_attempts

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        if isinstance(exc, Transient) and exc.status == 429:
            log.warning("%s rate-limited (%s); retrying in %.1f s", label, exc, delay)
        else:
            log.warning(
                "%s %d of %d failed (%s); retrying in %.1f s",
                label,
                failures,
                policy.max_attempts,
                exc,
                delay,
            )

    retrying = AsyncRetrying(
        sleep=anyio.sleep,
        stop=stop,
        wait=backoff(policy, rng),
        retry=retry_if_exception_type(Transient),
        before_sleep=log_retry,
        reraise=True,
    )
    async for state in retrying:
        with state:
            result = await attempt()
    return result


async def post_json(
    client: httpx.AsyncClient,
    path: str,
    body: bytes,
    policy: RetryPolicy,
    *,
    bearer: Secret | None = None,
    secrets: tuple[Secret, ...] = (),
    budget: RestBudget | None = None,
) -> httpx.Response:
    """POST ``body`` once and return the response, unless it is worth repeating.

    Raises ``Transient`` (no answer within ``request_timeout``, a transport
    error, HTTP 429 or 5xx) or ``GatewayError`` (a request that cannot be
    made at all, such as an undecodable body: repeating it won't help).
    ``bearer`` and ``secrets`` are redacted from every message. With a
    ``budget`` the request first waits for its slot, and a 429 holds the budget.
    """
    import httpx

    if budget is not None:
        await budget.acquire(path)
    headers = {"content-type": "application/json", "accept": "application/json"}
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer.reveal()}"
        secrets = (*secrets, bearer)
    timeout = policy.request_timeout
    try:
        with anyio.fail_after(timeout):
            response = await client.post(path, content=body, headers=headers)
    except TimeoutError:
        raise Transient(f"POST {path}: no answer within {timeout:g} s") from None
    except httpx.TransportError as exc:
        raise Transient(redact(f"POST {path}: {type(exc).__name__}: {exc}", *secrets)) from None
    except httpx.RequestError as exc:
        raise GatewayError(redact(f"POST {path}: {type(exc).__name__}: {exc}", *secrets)) from None
    status = response.status_code
    if status == 429:
        wait = retry_after(response, policy.retry_after_max)
        if budget is not None:
            budget.hold(path, wait)
        raise Transient(f"POST {path}: HTTP 429", status=status, retry_after=wait)
    if status >= 500:
        raise Transient(f"POST {path}: HTTP {status}", status=status)
    return response


FAILURES: Final = ("transient", "unauthorized", "auth", "rejected", "malformed")
"""Why a request was given up: 429/5xx/timeout/transport after every retry; 401 again
after a fresh token; no token from auth; refused (HTTP 4xx, ``success: false``);
an answer that is not the endpoint's JSON."""


class Failed(Exception):
    """A request given up on; ``kind`` is one of ``FAILURES``, the message holds no secret."""

    def __init__(self, kind: str, what: str) -> None:
        super().__init__(what)
        self.kind = kind


class _Refused(Exception):
    """HTTP 401: the token is no good; a fresh one may be."""


class TokenCaller:
    """POSTs to the gateway with the node's token, for one actor.

    ``counters["requests"]`` counts every attempt (retries included);
    ``token_timeout`` bounds the wait for auth (a login can take its retries).
    ``token`` is the last token used, so that an answer echoing it is redacted.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        rng: random.Random,
        budget: RestBudget | None,
        *,
        token_timeout: float,
        counters: MutableMapping[str, int],
        log: logging.Logger,
    ) -> None:
        self._policy = policy
        self._rng = rng
        self._budget = budget
        self._token_timeout = token_timeout
        self.counters = counters
        self._log = log
        self.token: Secret | None = None

    def __repr__(self) -> str:
        return f"<TokenCaller {self._budget!r}>"

    async def post(
        self, client: httpx.AsyncClient, auth: Ref[Any], path: str, body: bytes
    ) -> bytes:
        """The body of the HTTP 200 answer to one logical request (``Failed`` if none)."""
        try:
            return await self._with_retries(client, path, body, await self._ask_token(auth))
        except _Refused:
            self._log.info("token refused (HTTP 401); asking auth for a new one")
        await auth.tell(RefreshToken())
        try:
            return await self._with_retries(client, path, body, await self._ask_token(auth))
        except _Refused:
            raise Failed("unauthorized", "HTTP 401 with a fresh token") from None

    def decode(self, kind: type[R], path: str, content: bytes) -> R:
        """The answer as ``kind``; ``Failed`` if it is not that JSON or says ``success: false``."""
        try:
            answer = gw.decoder(kind).decode(content)
        except msgspec.ValidationError as exc:
            raise Failed("malformed", f"{path.removeprefix('/api/')}: {exc}") from None
        except msgspec.DecodeError:
            raise Failed("malformed", f"{path.removeprefix('/api/')}: answer is not JSON") from None
        if not answer.success:
            raise Failed("rejected", gw.describe_error(path, answer, self.redact))
        return answer

    def redact(self, text: str) -> str:
        return redact(text, self.token) if self.token is not None else text

    async def _ask_token(self, auth: Ref[Any]) -> Secret:
        try:
            reply = await auth.ask(GetToken(), self._token_timeout)
        except PxError as exc:  # AskTimeout, or auth is gone
            raise Failed("auth", f"no token: {exc}") from None
        if not isinstance(reply, TokenIssued):
            raise Failed("auth", f"no token: {getattr(reply, 'reason', type(reply).__name__)}")
        self.token = reply.token
        return reply.token

    async def _with_retries(
        self, client: httpx.AsyncClient, path: str, body: bytes, token: Secret
    ) -> bytes:
        policy = self._policy
        endpoint = path.removeprefix("/api/")
        try:
            return await with_retries(
                lambda: self._attempt(client, path, body, token),
                policy,
                self._rng,
                log=self._log,
                label=f"{endpoint} attempt",
            )
        except Transient as exc:
            raise Failed(
                "transient", f"gave up after {policy.max_attempts} attempts: {exc}"
            ) from None

    async def _attempt(
        self, client: httpx.AsyncClient, path: str, body: bytes, token: Secret
    ) -> bytes:
        self.counters["requests"] += 1
        try:
            response = await post_json(
                client, path, body, self._policy, bearer=token, budget=self._budget
            )
        except GatewayError as exc:  # a request that cannot be made: repeating won't help
            raise Failed("malformed", str(exc)) from None
        status = response.status_code
        if status == 401:
            raise _Refused
        if status != 200:
            raise Failed("rejected", f"HTTP {status}")
        return response.content
