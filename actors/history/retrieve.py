"""One logical History/retrieveBars call: the shared ``rest.TokenCaller`` (token, budget,
retries, one more token after a 401) and the answer's checks.

Every failure ends as ``rest.Failed(kind, what)``: ``kind`` is one of
``rest.FAILURES`` and ``what`` one line that holds no secret (a token echoed by
the gateway is redacted).
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any, Final

import msgspec

from protocols import gateway as gw
from protocols import rest
from protocols.interfaces import Ref

from .config import HistoryConfig

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("pxnode.history")

PATH: Final = "/api/History/retrieveBars"


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
        self.counters = counters
        self._caller = rest.TokenCaller(
            msgspec.convert(config, rest.RetryPolicy, from_attributes=True),
            rng,
            budget,
            token_timeout=config.token_timeout,
            counters=counters,
            log=logger,
        )

    def __repr__(self) -> str:
        return f"<Retriever {self._caller!r}>"

    async def bars(self, client: httpx.AsyncClient, auth: Ref[Any], body: bytes) -> list[Any]:
        """The bars of one logical request: a token, retries, one more token after a 401."""
        return self._decode(await self._caller.post(client, auth, PATH, body))

    def _decode(self, content: bytes) -> list[Any]:
        """The answer's bar items: ``HistoryBar``s, or raw items where one failed to decode."""
        answer: gw.RetrieveBarsResponse | _LooseBars
        try:
            answer = gw.decoder(gw.RetrieveBarsResponse).decode(content)
        except msgspec.ValidationError:
            try:  # the envelope may be fine and only some bars bad
                answer = gw.decoder(_LooseBars).decode(content)
            except msgspec.DecodeError:
                raise rest.Failed("malformed", "not a retrieveBars answer") from None
        except msgspec.DecodeError:
            raise rest.Failed("malformed", "answer is not JSON") from None
        if not answer.success:
            raise rest.Failed("rejected", gw.describe_error(PATH, answer, self._caller.redact))
        if answer.bars is None:  # not "no bars": taken as that, it would erase the live ones
            raise rest.Failed("malformed", "an answer without its bars")
        items: list[Any] = answer.bars
        self.counters["bars_received"] += len(items)
        return items
