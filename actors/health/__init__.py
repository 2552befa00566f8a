"""The health actor: a truthful verdict on the hubs, and the stale-feed watchdog.

``actor`` is HealthActor (events in, ``GetHealth`` answers, reconnect requests
and counters out); ``verdict`` judges the per-hub truth table and the score
from what the actor recorded; ``config`` is HealthConfig and its ScoreWeights.
"""

from .actor import HealthActor as HealthActor
from .config import HealthConfig as HealthConfig
from .config import ScoreWeights as ScoreWeights

__all__ = ["HealthActor", "HealthConfig", "ScoreWeights"]
