"""The stats actor and what it is built from.

``actor`` is StatsActor (reports in, snapshots out); ``windows`` holds the
bounded stores behind rates and latency quantiles; ``config`` is StatsConfig
and the memory budget of the bar rings (``dynamic_limits``).
"""

from .actor import StatsActor as StatsActor
from .config import BAR_BYTES as BAR_BYTES
from .config import StatsConfig as StatsConfig
from .config import dynamic_limits as dynamic_limits

__all__ = ["BAR_BYTES", "StatsActor", "StatsConfig", "dynamic_limits"]
