"""History/retrieveBars for the history actor: one source's bars of one contract over
some windows (``Retriever.fetch``: the request, each bar's checks, duplicates, an answer
cut short by ``max_bars``), through the shared ``rest.TokenCaller`` (token, budget,
retries, one more token after a 401).

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
from protocols.messages import Bar
from protocols.timeframes import BarClock

from .config import UNITS, HistoryConfig
from .window import SOURCE_FRAMES, SOURCE_US, Source, iso, to_bar

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("pxnode.history")

PATH: Final = "/api/History/retrieveBars"


class _LooseBars(gw.RestResponse, frozen=True):
    """A retrieveBars answer whose bars are judged one by one (one bad bar spoils none)."""

    bars: list[msgspec.Raw] | None = None


class Fetched:
    """A source's bars, oldest first; whole bars can be made from ``begin`` on."""

    __slots__ = ("begin", "rows")

    def __init__(self, rows: list[Bar], begin: int) -> None:
        self.rows = rows
        self.begin = begin


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
        self._config = config
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

    async def fetch(
        self,
        client: httpx.AsyncClient,
        auth: Ref[Any],
        contract: str,
        source: Source,
        windows: list[tuple[int, int]],
    ) -> Fetched | rest.Failed:
        """The source bars of ``contract`` over the union of ``windows``, or why there are none."""
        lo, hi = min(w[0] for w in windows), max(w[1] for w in windows)
        step = SOURCE_US[source]
        limit = min(self._config.max_bars, -(-(hi - lo) // step))
        frame = SOURCE_FRAMES[source]
        request = gw.RetrieveBarsRequest(
            contract_id=contract,
            live=self._config.live,
            start_time=iso(lo),
            end_time=iso(hi),
            unit=UNITS[frame.unit],
            unit_number=1,
            limit=limit,
            include_partial_bar=False,
        )
        try:
            answer = await self.bars(client, auth, gw.ENCODER.encode(request))
        except rest.Failed as exc:
            self.counters[f"failures_{exc.kind}"] += 1
            logger.warning("no %s history for %s: %s", frame.name, contract, exc)
            return rest.Failed(exc.kind, f"{frame.name} history: {exc}")
        clock = BarClock(frame)
        rows: list[Bar] = []
        for item in answer:
            bar = to_bar(contract, frame, clock, item, (lo, hi))
            if isinstance(bar, Bar):
                rows.append(bar)
            else:
                self.counters[f"bars_rejected_{bar}"] += 1
        rows.sort(key=_start)  # stable: of two bars with one start, the answer's first is kept
        unique = [row for k, row in enumerate(rows) if k == 0 or row.start != rows[k - 1].start]
        self.counters["bars_rejected_duplicate"] += len(rows) - len(unique)
        rows = unique
        begin = lo
        if len(answer) >= limit and limit < -(-(hi - lo) // step):
            self.counters["truncated"] += 1
            begin = rows[0].start if rows else hi
            logger.warning(
                "%s history of %s reaches back only to %s (max_bars %d)",
                frame.name,
                contract,
                iso(begin),
                limit,
            )
        return Fetched(rows, begin)

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


def _start(bar: Bar) -> int:
    return bar.start
