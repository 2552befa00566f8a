"""Why each counter that drops something dropped it: the HELP of its metric family.

The README promises that every drop counter says why in its HELP. The counters are
the actors' own (``source.counter`` keys, reported to stats); their reasons are
written here, once, beside the exposition that prints them, and a test holds every
drop counter of the actors to having one.
"""

from __future__ import annotations

import re

_DROPS = tuple(
    (re.compile(pattern), text)
    for pattern, text in (
        (
            r"\w+\.(trades|quotes|depth)_rejected\.(\w+)",
            "Items validation rejected: {0}, by the {1} rule (the first they failed,"
            " docs/rules.md): counted, never passed on.",
        ),
        (
            r"\w+\.frames_malformed",
            "Hub frames skipped whole: not [contractId, payload] of the target's shape.",
        ),
        (
            r"\w+\.frames_unknown_target",
            "Hub frames skipped whole: an event the node does not know.",
        ),
        (
            r"\w+\.frames_unsubscribed",
            "Market frames skipped whole: of a contract the node does not subscribe"
            " (a frame still on its way after an unsubscribe).",
        ),
        (
            r"\w+\.frames_over_contract_cap",
            "Market frames skipped whole: of a contract beyond validation.max_contracts,"
            " so the per-contract state stays bounded.",
        ),
        (
            r"\w+\.(messages_ignored|unknown_messages|ignored)",
            "Messages of no use to the actor: dropped.",
        ),
        (
            r"\w+\.reports_dropped",
            "Counter reports stats had no room for: dropped (reports are cumulative,"
            " so the next one carries the counts).",
        ),
        (
            r"\w+\.late_beyond_ring",
            "Late trades whose bar had left the ring of closed bars (bars.ring_size):"
            " not aggregated.",
        ),
        (
            r"\w+\.backfill_rejected",
            "History bars not taken into the book: not aligned to the timeframe,"
            " not a sane bar, or outside their window.",
        ),
        (
            r"\w+\.backfill_stale",
            "Back-fills dropped whole: a newer cut of their series superseded them.",
        ),
        (
            r"\w+\.trades_before_cut",
            "Live trades the back-filled history bars hold already: not counted again.",
        ),
        (
            r"\w+\.volume_saturated",
            "Bar updates whose volume was held at 2**63-1 instead of overflowing.",
        ),
        (r"\w+\.bars_rejected_(\w+)", "History bars of an answer rejected ({0}): not back-filled."),
        (
            r"\w+\.items_rejected",
            "REST answer items of the wrong shape: skipped, removing nothing.",
        ),
        (
            r"account\.unfollowed",
            "User-hub events of an account not in gateway.accounts: not applied.",
        ),
        (
            r"\w+\.contracts_unpriced",
            "Tick-value lookups that failed: the contract's open P&L stays in points"
            " until the next sync.",
        ),
        (r"\w+\.fills_dropped", "Fills no longer kept: newer ones took their place (max_fills)."),
        (r"\w+\.raw_dropped", "Hub messages the tape recorder had no room for: not recorded."),
        (r"\w+\.bad\.(\w+)", "Hub messages the SignalR codec skipped ({0}); the socket is kept."),
        (r"\w+\.commands_rejected\.(\w+)", "Subscription commands the connection refused ({0})."),
        (r"\w+\.lines_unrecordable", "Hub messages the tape could not encode: not recorded."),
        (
            r"nats_source\.malformed",
            "Stream messages that are not a trade of their subject's contract: skipped.",
        ),
        (
            r"nats_source\.other_contract",
            "Stream messages of a contract this consumer does not read: skipped.",
        ),
        (
            r"nats_source\.warm_up_rejected",
            "Stored trades the warm-up refused (shape or time): not built into bars.",
        ),
        (
            r"nats_bridge\.duplicates",
            "Messages JetStream answered as duplicates (their Nats-Msg-Id seen in its"
            " window): stored once.",
        ),
        (
            r"nats_bridge\.stored_before",
            "Messages a lost connection left unacknowledged that the stream held already:"
            " not published again.",
        ),
    )
)
"""Pattern of a reported key, and its HELP (the first pattern that matches wins)."""


def why_dropped(key: str) -> str | None:
    """Why the counter ``key`` (``source.counter``) dropped something, if it counts drops."""
    for pattern, text in _DROPS:
        if match := pattern.fullmatch(key):
            return text.format(*match.groups())
    return None
