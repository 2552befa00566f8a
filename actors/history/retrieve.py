"""One logical History/retrieveBars call: a token, the budget, retries, one more token after a 401.

Every failure ends as ``Failed(kind, what)``: ``kind`` is one of ``FAILURES`` and
``what`` one line that holds no secret (a token echoed by the gateway is
redacted). HTTP 429 is retried until it succeeds (``rest.with_retries``); a
401 gets one fresh token from auth.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Final

import httpx
import msgspec

from protocols import gateway as gw
from protocols import rest
from protocols.errors import GatewayError, PxError
from protocols.interfaces import Ref
from protocols.messages import GetToken, RefreshToken, TokenIssued
from protocols.secrets import Secret, redact

from .config import HistoryConfig

logger = logging.getLogger("pxnode.history")

PATH: Final = "/api/History/retrieveBars"


class Failed(Exception):
    """A request given up on; ``kind`` is one of ``FAILURES``, the message holds no secret."""

    def __init__(self, kind: str, what: str) -> None:
        super().__init__(what)
        self.kind = kind


class Refused(Exception):
    """HTTP 401: the token is no good; a fresh one may be."""


class _LooseBars(gw.RestResponse, frozen=True):
    """A retrieveBars answer whose bars are judged one by one (one bad bar spoils none)."""

    bars: list[msgspec.Raw] | None = None


class Retriever:
    """Makes retrieveBars calls for the history actor, counting into its ``counters``."""

    def __init__(
        self,
        config: HistoryConfig,
        counters: dict[str, int],
        rng: random.Random,
        budget: rest.RestBudget | None,
    ) -> None:
        self._config = config
        self.counters = counters
        self._rng = rng
        self._budget = budget
        self._policy = msgspec.convert(config, rest.RetryPolicy, from_attributes=True)
        self.token: Secret | None = None  # the last token used, to redact echoes of it

    def __repr__(self) -> str:
        return f"<Retriever {self._budget!r}>"

    async def bars(self, client: httpx.AsyncClient, auth: Ref[Any], body: bytes) -> list[Any]:
        """The bars of one logical request: a token, retries, one more token after a 401."""
        try:
            return await self._with_retries(client, body, await self._ask_token(auth))
        except Refused:
            logger.info("token refused (HTTP 401); asking auth for a new one")
        await auth.tell(RefreshToken())
        try:
            return await self._with_retries(client, body, await self._ask_token(auth))
        except Refused:
            raise Failed("unauthorized", "HTTP 401 with a fresh token") from None

    async def _ask_token(self, auth: Ref[Any]) -> Secret:
        try:
            reply = await auth.ask(GetToken(), self._config.token_timeout)
        except PxError as exc:  # AskTimeout, or auth is gone
            raise Failed("auth", f"no token: {exc}") from None
        if not isinstance(reply, TokenIssued):
            raise Failed("auth", f"no token: {getattr(reply, 'reason', type(reply).__name__)}")
        self.token = reply.token
        return reply.token

    async def _with_retries(
        self, client: httpx.AsyncClient, body: bytes, token: Secret
    ) -> list[Any]:
        policy = self._policy
        try:
            return await rest.with_retries(
                lambda: self._attempt(client, body, token),
                policy,
                self._rng,
                log=logger,
                label="retrieveBars attempt",
            )
        except rest.Transient as exc:
            raise Failed(
                "transient", f"gave up after {policy.max_attempts} attempts: {exc}"
            ) from None

    async def _attempt(self, client: httpx.AsyncClient, body: bytes, token: Secret) -> list[Any]:
        self.counters["requests"] += 1
        try:
            response = await rest.post_json(
                client, PATH, body, self._policy, bearer=token, budget=self._budget
            )
        except GatewayError as exc:  # a request that cannot be made: repeating won't help
            raise Failed("malformed", str(exc)) from None
        status = response.status_code
        if status == 401:
            raise Refused
        if status != 200:
            raise Failed("rejected", f"HTTP {status}")
        return self._decode(response.content)

    def _decode(self, content: bytes) -> list[Any]:
        """The answer's bar items: ``HistoryBar``s, or raw items where one failed to decode."""
        answer: gw.RetrieveBarsResponse | _LooseBars
        try:
            answer = gw.decoder(gw.RetrieveBarsResponse).decode(content)
        except msgspec.ValidationError:
            try:  # the envelope may be fine and only some bars bad
                answer = gw.decoder(_LooseBars).decode(content)
            except msgspec.DecodeError:
                raise Failed("malformed", "not a retrieveBars answer") from None
        except msgspec.DecodeError:
            raise Failed("malformed", "answer is not JSON") from None
        if not answer.success:
            raise Failed("rejected", gw.describe_error(PATH, answer, self._redact))
        items: list[Any] = answer.bars or []
        self.counters["bars_received"] += len(items)
        return items

    def _redact(self, text: str) -> str:
        return redact(text, self.token) if self.token is not None else text
