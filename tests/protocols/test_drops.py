"""Every drop counter says why in its HELP (the README's promise for /metrics)."""

from __future__ import annotations

import re

from actors.bars.actor import COUNTERS as BARS_COUNTERS
from actors.history import COUNTERS as HISTORY_COUNTERS
from actors.validation import ValidationActor
from protocols.drops import why_dropped
from protocols.stats import StatsSnapshot, metric_name, render_prometheus

GENERIC_HELP = "Counter reported by a pxnode actor."


def drop_counters() -> list[str]:
    """The actors' counters that drop something, as stats keys (``source.counter``)."""
    validation = [
        f"validation.{key}"
        for key in ValidationActor().counters()
        if re.search("rejected|frames_(?!received)|ignored|dropped", key)
    ]
    assert len(validation) == 30  # frames 4, rejections 8 + 8 + 8, ignored, reports_dropped
    bars = ["late_beyond_ring", "backfill_rejected", "backfill_stale", "trades_before_cut",
            "volume_saturated", "unknown_messages"]  # fmt: skip
    assert set(bars) <= set(BARS_COUNTERS)
    return [
        *validation,
        *(f"bars.{key}" for key in bars),
        *(f"history.{key}" for key in HISTORY_COUNTERS if key.startswith("bars_rejected_")),
        "account.items_rejected", "account.contracts_unpriced", "account.fills_dropped",
        "account.unfollowed", "connection_market.raw_dropped", "connection_user.bad.malformed",
        "connection_market.commands_rejected.unknown", "recorder.lines_unrecordable",
        "nats_source.malformed", "nats_source.other_contract", "nats_source.warm_up_rejected",
        "nats_bridge.duplicates", "nats_bridge.stored_before", "nats_bridge.ignored",
    ]  # fmt: skip


def test_every_drop_counter_says_why_in_its_help() -> None:
    drops = drop_counters()
    assert [key for key in drops if why_dropped(key) is None] == []
    snapshot = StatsSnapshot(
        taken_at=0.0, uptime_s=1.0, rss_bytes=0, cpu_percent=0.0,
        counters=dict.fromkeys([*drops, "validation.trades_accepted"], 1),
        gauges={}, rates={}, latencies={}, mailboxes={}, children={}, escalations={}, dropped={},
    )  # fmt: skip
    helps = dict(
        line.removeprefix("# HELP ").split(" ", 1)
        for line in render_prometheus(snapshot).splitlines()
        if line.startswith("# HELP ")
    )
    assert [key for key in drops if helps[metric_name(key, "_total")] == GENERIC_HELP] == []
    assert helps["pxnode_validation_trades_accepted_total"] == GENERIC_HELP  # not a drop
    assert "by the spike rule" in helps["pxnode_validation_trades_rejected_spike_total"]


def test_a_counter_of_that_name_elsewhere_is_not_taken_for_a_drop() -> None:
    assert why_dropped("nats_source.malformed") is not None
    assert why_dropped("account.malformed") is None  # the stream's reason, not any source's
    assert why_dropped("validation.trades_accepted") is None
