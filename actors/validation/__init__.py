"""Validation: the one gate between the raw gateway feed and everything that trusts it.

Theory of operation
-------------------
Raw hub invocations (``HubMessageReceived``, or several at once in a
``HubMessagesReceived``, as replay sends them) arrive in batches. Each market
frame is ``[contractId, payload]``; every item of its payload is judged alone,
in arrival order, and the first failing rule names the reason:

===== ========================================= ==================================
kind  rules, in order                           state per contract
===== ========================================= ==================================
trade price volume timestamp future too_old     newest accepted ts, last accepted
      stale spike                               price
quote price volume crossed timestamp future     newest accepted ts
      too_old stale
depth price volume type timestamp future        newest accepted ts
      too_old stale
===== ========================================= ==================================

An item that is not a JSON object is ``malformed``. Only *accepted* items move
the per-contract state, so one bad tick can never poison the next good one.
A frame that is not ``[non-empty string, payload]``, or names an unknown target,
is counted under ``frames_*`` and skipped.

Value rules: a price is a JSON number (not a bool), finite and > 0; a volume
is a JSON *integer* (``1.0`` is not one) that fits in int64 -- trades need
>= 1, quote/depth volumes >= 0; a side (trade ``type``) that is not an integer
is kept as -1 rather than dropping a good print; a depth ``type`` must be a
``DomType`` (0..11). A Reset (6) clears the book: its price and volumes mean
nothing (0 or null at the gateway) and are passed on as 0.

Time rules: every time is an integer of microseconds since the epoch, so the
thresholds are exact: exactly ``max_future``, ``max_age`` or ``stale_after``
passes, one microsecond more is rejected. The receive time is rounded to the
microsecond.

``actor`` runs the inbox loop, decodes and admits each frame and judges trades;
``book`` judges quotes and depth; ``fallback``
sanitises a frame the typed decoder refused and settles a near-boundary spike
exactly; ``outbox`` tells the accepted items downstream; ``config`` holds
ValidationConfig and the reasons counted.
"""

from .actor import ValidationActor as ValidationActor
from .config import TRADE_REASONS as TRADE_REASONS
from .config import ValidationConfig as ValidationConfig

__all__ = ["TRADE_REASONS", "ValidationActor", "ValidationConfig"]
