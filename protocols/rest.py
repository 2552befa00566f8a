"""Calling the ProjectX REST API: one POST attempt, the retries around it, the shared budget.

The node has several REST clients (auth, history, ...) and they must fail alike.
An attempt that may succeed if repeated (HTTP 429, 5xx, a timeout, a transport
error) raises ``Transient``; every other answer goes back to the caller, who
alone knows what a 401 or a ``success: false`` means for its endpoint. Retries
wait ``Retry-After`` when the gateway sends a usable one (capped, so a hostile
header cannot park the node for a day), else back off exponentially with
jitter drawn from the caller's seeded ``random.Random``, so a test replays the
same waits.

The gateway limits every user to 50 History/retrieveBars requests per 30 s and
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

Invariant: no text raised or logged here holds a secret; whatever may echo one
(an httpx error can quote a header) passes ``redact`` with the caller's secrets.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import anyio
import httpx
import msgspec
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from protocols.checks import count, positive
from protocols.errors import GatewayError
from protocols.secrets import Secret, redact

T = TypeVar("T")


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

    history: RateLimit = RateLimit(50, 30.0)
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


def backoff(policy: RetryPolicy, rng: random.Random) -> Callable[[RetryCallState], float]:
    """A tenacity ``wait``: the gateway's ``Retry-After`` if it gave one, else jittered backoff."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            return exc.retry_after
        base = policy.backoff_min * 2.0 ** min(state.attempt_number - 1, 64)
        return min(base, policy.backoff_max) * (1 - policy.backoff_jitter * rng.random())

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

    HTTP 429 is retried without limit; after ``max_attempts`` calls any other
    ``Transient`` propagates: giving up means something different to each caller.
    Every retry is logged as a warning on ``log`` as "<label> N of M failed".
    """

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "%s %d of %d failed (%s); retrying in %.1f s",
            label,
            state.attempt_number,
            policy.max_attempts,
            exc,
            delay,
        )

    def stop(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Transient) and exc.status == 429:
            return False  # the budget was exceeded: waiting it out always ends
        return bool(stop_after_attempt(policy.max_attempts)(state))

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
