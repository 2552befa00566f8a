"""Calling the ProjectX REST API: one POST attempt, and the retries around it.

The node has two REST clients (auth and history) and they must fail alike.
An attempt that may succeed if repeated (HTTP 429, 5xx, a timeout, a transport
error) raises ``Transient``; every other answer goes back to the caller, who
alone knows what a 401 or a ``success: false`` means for its endpoint. Retries
wait ``Retry-After`` when the gateway sends a usable one (capped, so a hostile
header cannot park the node for a day), else back off exponentially with
jitter drawn from the caller's seeded ``random.Random``, so a test replays the
same waits.

Invariant: no text raised or logged here holds a secret; whatever may echo one
(an httpx error can quote a header) passes ``redact`` with the caller's secrets.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import httpx
import msgspec
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

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

    After ``max_attempts`` the last ``Transient`` propagates: giving up means
    something different to each caller. Every retry is logged as a warning on
    ``log`` as "<label> N of M failed".
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

    retrying = AsyncRetrying(
        sleep=anyio.sleep,
        stop=stop_after_attempt(policy.max_attempts),
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
) -> httpx.Response:
    """POST ``body`` once and return the response, unless it is worth repeating.

    Raises ``Transient`` (no answer within ``request_timeout``, a transport
    error, HTTP 429 or 5xx) or ``GatewayError`` (a request that cannot be
    made at all, such as an undecodable body: repeating it won't help).
    ``bearer`` and ``secrets`` are redacted from every message.
    """
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
        raise Transient(f"POST {path}: HTTP 429", status=status, retry_after=wait)
    if status >= 500:
        raise Transient(f"POST {path}: HTTP {status}", status=status)
    return response
