from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import httpx
import pytest
import trio

from protocols import rest
from protocols.errors import ConfigError, GatewayError
from protocols.secrets import Secret

TOKEN = "tok-SECRET-1"


def policy(**overrides: Any) -> rest.RetryPolicy:
    settings: dict[str, Any] = {
        "request_timeout": 10.0,
        "max_attempts": 5,
        "backoff_min": 1.0,
        "backoff_max": 8.0,
        "backoff_jitter": 0.0,
        "retry_after_max": 60.0,
    }
    return rest.RetryPolicy(**(settings | overrides))


def response(status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


# ------------------------------------------------------------------ retry_after


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0", 0.0),
        ("2", 2.0),
        ("1.5", 1.5),
        ("86400", 60.0),  # capped
        ("1e308", 60.0),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),  # an HTTP-date: fall back to backoff
        ("", None),
    ],
)
def test_retry_after_is_seconds_capped_or_none(header: str, expected: float | None) -> None:
    assert rest.retry_after(response(429, **{"Retry-After": header}), 60.0) == expected


def test_retry_after_absent_is_none() -> None:
    assert rest.retry_after(response(429), 60.0) is None


# ------------------------------------------------------------------ with_retries


def failing(
    outcomes: list[BaseException | str], times: list[float]
) -> Callable[[], Awaitable[str]]:
    """An attempt that raises or returns the next outcome, noting when it was made."""

    async def attempt() -> str:
        times.append(anyio.current_time())
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return attempt


LOG = logging.getLogger("test.rest")


@pytest.mark.trio
async def test_transients_are_retried_with_doubling_capped_backoff(autojump_clock: Any) -> None:
    times: list[float] = []
    outcomes: list[BaseException | str] = [*[rest.Transient("HTTP 503")] * 5, "ok"]
    result = await rest.with_retries(
        failing(outcomes, times), policy(max_attempts=6), random.Random(0), log=LOG
    )
    assert result == "ok"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 8.0]


@pytest.mark.trio
async def test_retry_after_wins_over_backoff(autojump_clock: Any) -> None:
    times: list[float] = []
    outcomes: list[BaseException | str] = [rest.Transient("HTTP 429", retry_after=30.0), "ok"]
    await rest.with_retries(failing(outcomes, times), policy(), random.Random(0), log=LOG)
    assert times == [0.0, 30.0]


@pytest.mark.trio
async def test_jitter_shortens_waits_deterministically(autojump_clock: Any) -> None:
    async def run(seed: int) -> list[float]:
        times: list[float] = []
        outcomes: list[BaseException | str] = [*[rest.Transient("x")] * 4, "ok"]
        jittery = policy(backoff_jitter=0.5)
        await rest.with_retries(failing(outcomes, times), jittery, random.Random(seed), log=LOG)
        return [b - a for a, b in itertools.pairwise(times)]

    draws = random.Random(7)
    expected = [full * (1 - 0.5 * draws.random()) for full in (1.0, 2.0, 4.0, 8.0)]
    assert await run(7) == pytest.approx(expected)
    assert await run(8) != pytest.approx(expected)


@pytest.mark.trio
async def test_gives_up_with_the_last_transient(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="test.rest")
    times: list[float] = []
    outcomes: list[BaseException | str] = [
        rest.Transient(f"try {n}", status=503) for n in (1, 2, 3)
    ]
    with pytest.raises(rest.Transient, match="try 3") as info:
        await rest.with_retries(
            failing(outcomes, times), policy(max_attempts=3), random.Random(0), log=LOG, label="x"
        )
    assert info.value.status == 503
    assert len(times) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "x 1 of 3 failed (try 1); retrying in 1.0 s",
        "x 2 of 3 failed (try 2); retrying in 2.0 s",
    ]


@pytest.mark.trio
async def test_anything_else_is_not_retried(autojump_clock: Any) -> None:
    times: list[float] = []
    outcomes: list[BaseException | str] = [GatewayError("HTTP 404", status=404), "ok"]
    with pytest.raises(GatewayError, match="404"):
        await rest.with_retries(failing(outcomes, times), policy(), random.Random(0), log=LOG)
    assert times == [0.0]


# --------------------------------------------------------------------- post_json


Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


async def post(handler: Handler, **kwargs: Any) -> httpx.Response:
    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(base_url="https://gw.test", transport=transport) as client:
        return await rest.post_json(client, "/api/X", b'{"a":1}', policy(), **kwargs)


@pytest.mark.trio
@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404])
async def test_non_transient_answers_are_returned(status: int) -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=b"{}")

    got = await post(handler, bearer=Secret(TOKEN))
    assert got.status_code == status
    (request,) = seen
    assert request.method == "POST" and request.url.path == "/api/X"
    assert request.content == b'{"a":1}'
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.trio
async def test_no_bearer_no_authorization_header() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        assert "authorization" not in request.headers
        return httpx.Response(200)

    assert (await post(handler)).status_code == 200


@pytest.mark.trio
@pytest.mark.parametrize(
    ("answer", "status", "wait"),
    [
        (response(429, **{"Retry-After": "7"}), 429, 7.0),
        (response(429, **{"Retry-After": "999"}), 429, 60.0),
        (response(429, **{"Retry-After": "later"}), 429, None),
        (response(500), 500, None),
        (response(503), 503, None),
        (response(599), 599, None),
    ],
)
async def test_429_and_5xx_are_transient(
    answer: httpx.Response, status: int, wait: float | None
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return answer

    with pytest.raises(rest.Transient, match=f"POST /api/X: HTTP {status}") as info:
        await post(handler)
    assert info.value.status == status
    assert info.value.retry_after == wait


@pytest.mark.trio
async def test_no_answer_in_time_is_transient(autojump_clock: Any) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(3600)
        return httpx.Response(200)

    with pytest.raises(rest.Transient, match="no answer within 10 s"):
        await post(handler)
    assert anyio.current_time() == 10.0


@pytest.mark.trio
async def test_transport_errors_are_transient_and_redacted() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused Bearer {TOKEN} key KEY-SECRET")

    with pytest.raises(rest.Transient) as info:
        await post(handler, bearer=Secret(TOKEN), secrets=(Secret("KEY-SECRET"),))
    assert str(info.value) == "POST /api/X: ConnectError: refused Bearer *** key ***"
    assert info.value.status is None and info.value.retry_after is None


@pytest.mark.trio
async def test_a_request_that_cannot_be_made_is_a_gateway_error_and_redacted() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.DecodingError(f"bad body for {TOKEN}")

    with pytest.raises(GatewayError) as info:
        await post(handler, bearer=Secret(TOKEN))
    assert str(info.value) == "POST /api/X: DecodingError: bad body for ***"
    assert "SECRET" not in repr(info.value)


# ----------------------------------------------------------------- the budget


@pytest.mark.trio
async def test_the_budget_queues_requests_in_order_within_a_sliding_window(
    autojump_clock: Any,
) -> None:
    budget = rest.RestBudget(
        rest.RestLimits(history=rest.RateLimit(2, 30.0), other=rest.RateLimit(3, 60.0))
    )
    sent: list[tuple[str, float]] = []

    async def request(path: str) -> None:
        await budget.acquire(path)
        sent.append((path, anyio.current_time()))

    async with anyio.create_task_group() as tg:
        for path in ["/api/History/retrieveBars"] * 5 + ["/api/Auth/loginKey"] * 4:
            tg.start_soon(request, path)
            await trio.sleep(1)  # one new request a second
    history = [at for path, at in sent if path.startswith("/api/History/")]
    other = [at for path, at in sent if not path.startswith("/api/History/")]
    assert history == [0.0, 1.0, 30.0, 31.0, 60.0]  # never more than 2 in any 30 s
    assert other == [5.0, 6.0, 7.0, 65.0]  # its own window: history never delays it
    assert budget.waited == 28 + 28 + 56 + 57


@pytest.mark.trio
async def test_the_default_budget_is_the_gateways_documented_limits(autojump_clock: Any) -> None:
    """gateway.docs.projectx.com, rate limits: History/retrieveBars 30 requests / 30 s,
    every other endpoint 200 / 60 s (older copies of the docs said 50 for history)."""
    budget = rest.RestBudget()
    for _ in range(30):
        await budget.acquire("/api/History/retrieveBars")
    assert anyio.current_time() == 0.0
    await budget.acquire("/api/History/retrieveBars")
    assert anyio.current_time() == 30.0
    for _ in range(200):
        await budget.acquire("/api/Order/search")
    assert anyio.current_time() == 30.0
    await budget.acquire("/api/Order/search")
    assert anyio.current_time() == 90.0


@pytest.mark.trio
async def test_a_429_holds_the_window_for_retry_after_or_a_whole_period(
    autojump_clock: Any,
) -> None:
    budget = rest.RestBudget()
    budget.hold("/api/History/retrieveBars", 7.0)
    budget.hold("/api/Order/search", None)  # no Retry-After: wait out a whole period
    await budget.acquire("/api/History/retrieveBars")
    assert anyio.current_time() == 7.0
    await budget.acquire("/api/Trade/search")
    assert anyio.current_time() == 60.0


@pytest.mark.trio
async def test_429_is_retried_beyond_max_attempts_other_transients_are_not(
    autojump_clock: Any,
) -> None:
    times: list[float] = []
    outcomes: list[BaseException | str] = [rest.Transient("429", status=429) for _ in range(6)]
    outcomes.append("ok")
    result = await rest.with_retries(
        failing(outcomes, times), policy(max_attempts=2), random.Random(0), log=LOG
    )
    assert result == "ok" and len(times) == 7


@pytest.mark.trio
async def test_429s_do_not_use_up_the_attempts_of_other_transients(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen in the chaos soak: a 500, four 429s, a 500 gave up after "4 attempts"."""
    caplog.set_level(logging.WARNING, logger="test.rest")
    times: list[float] = []
    outcomes: list[BaseException | str] = [
        rest.Transient("HTTP 500", status=500),
        *[rest.Transient("HTTP 429", status=429, retry_after=1.0)] * 4,
        rest.Transient("HTTP 500", status=500),
        "ok",
    ]
    result = await rest.with_retries(
        failing(outcomes, times), policy(max_attempts=3), random.Random(0), log=LOG, label="x"
    )
    assert result == "ok" and len(times) == 7
    assert [r.getMessage() for r in caplog.records] == [
        "x 1 of 3 failed (HTTP 500); retrying in 1.0 s",
        *["x rate-limited (HTTP 429); retrying in 1.0 s"] * 4,
        "x 2 of 3 failed (HTTP 500); retrying in 8.0 s",
    ]


@pytest.mark.parametrize("limit", [(0, 30.0), (1, 0.0), (1, float("nan"))])
def test_a_rate_limit_must_be_a_positive_count_and_period(limit: tuple[int, float]) -> None:
    with pytest.raises(ConfigError):
        rest.RateLimit(*limit)
