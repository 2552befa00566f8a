"""The connection actor (one per hub) and the subscription book it keeps across restarts.

``actor`` runs sessions (one socket each) and obeys the inbox (its docstring
is the theory of operation); ``tasks`` are an open session's reader, writer,
heartbeat and reporter; ``opening`` opens a session's socket (token to SignalR
handshake); ``link`` is the state of one socket; ``transport`` gets a socket
(address, negotiate, upgrade); ``book`` remembers what to subscribe after
every reconnect; ``config`` is HubConfig (address + HubTimings).
"""

from protocols.errors import ConnectionLost as ConnectionLost

from .actor import ConnectionActor as ConnectionActor
from .book import BadCommand as BadCommand
from .book import SubscriptionBook as SubscriptionBook
from .config import HubConfig as HubConfig
from .config import HubTimings as HubTimings
from .transport import Connect as Connect

__all__ = [
    "BadCommand",
    "Connect",
    "ConnectionActor",
    "ConnectionLost",
    "HubConfig",
    "HubTimings",
    "SubscriptionBook",
]
