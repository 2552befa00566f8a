"""Restart delays: how long a supervisor waits before starting a failed child again.

The schedule is Akka's ``BackoffSupervisor``: ``min_backoff * factor**attempt``,
capped at ``max_backoff``, then spread by a random fraction so that many
children failing together (every hub after one network blip) do not come back
in lock-step and hammer the gateway at the same instant.

The policy is pure: it owns no clock and no randomness. The caller passes the
attempt number and a seeded ``random.Random``, so a test with a fixed seed gets
the same delays on every run, and the supervisor decides when an attempt count
starts again at 0 (``reset_after``).
"""

from __future__ import annotations

import math
import operator
import random
from dataclasses import dataclass

from protocols.checks import finite
from protocols.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Backoff:
    """Akka-style restart delays: min_backoff * factor**attempt, capped at max_backoff, jittered.

    ``jitter`` is a fraction: the capped delay is multiplied by
    ``1 + rng.uniform(-jitter, +jitter)``, so a delay is never negative and
    never above ``max_backoff * (1 + jitter)``. ``reset_after`` is how long a
    child must run without failing before its next failure counts as attempt 0
    again; the caller measures that run time.
    """

    min_backoff: float = 0.1
    max_backoff: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    reset_after: float = 60.0

    def __post_init__(self) -> None:
        if finite("min_backoff", self.min_backoff) < 0:
            raise ConfigError(f"min_backoff must be >= 0, got {self.min_backoff!r}")
        if finite("max_backoff", self.max_backoff) < self.min_backoff:
            raise ConfigError(
                f"max_backoff must be >= min_backoff ({self.min_backoff!r}), "
                f"got {self.max_backoff!r}"
            )
        if finite("factor", self.factor) < 1:
            raise ConfigError(f"factor must be >= 1, got {self.factor!r}")
        if not 0 <= finite("jitter", self.jitter) < 1:
            raise ConfigError(f"jitter must be in [0, 1), got {self.jitter!r}")
        if finite("reset_after", self.reset_after) <= 0:
            raise ConfigError(f"reset_after must be > 0, got {self.reset_after!r}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before restart number ``attempt`` (0 = first restart)."""
        attempt = operator.index(attempt)  # TypeError for floats and strings
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        try:
            grown = self.min_backoff * self.factor**attempt
        except OverflowError:  # far past the cap (or 0 * anything when min_backoff is 0)
            grown = math.inf if self.min_backoff else 0.0
        capped = min(grown, self.max_backoff)
        if not self.jitter:  # no draw: a jitter-free policy leaves the rng stream untouched
            return capped
        return capped * (1.0 + rng.uniform(-self.jitter, self.jitter))


NO_BACKOFF = Backoff(min_backoff=0.0, max_backoff=0.0, jitter=0.0)
"""Restart at once, as OTP supervisors do by default."""
